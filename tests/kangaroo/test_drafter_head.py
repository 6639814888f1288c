import torch
from torch import nn

from kangaroo.drafter_head import DrafterHead, LoRALinear
from kangaroo.llama_forward import project


def _head(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Linear(16, 50, bias=False, dtype=dtype)


def test_init_reproduces_verifier_head_exactly():
    head = _head()
    d = DrafterHead.from_verifier_head(head, r=4, alpha=8.0)
    x = torch.randn(7, 16)
    out = d(x)
    assert out.dtype == torch.float32 and out.shape == (7, 50)
    assert torch.equal(out, project(x, head.weight))  # the verifier's head as the project computes it
    torch.testing.assert_close(out, head(x), rtol=1e-5, atol=1e-5)
    assert d.proj.scaling == 2.0 and d.proj.A.shape == (4, 16) and d.proj.B.shape == (50, 4)
    assert d.proj.A.abs().sum() > 0 and torch.count_nonzero(d.proj.B) == 0


def test_fp16_head_gives_float32_logits():
    head = _head(torch.float16)
    d = DrafterHead.from_verifier_head(head)
    assert d.proj.base.weight.dtype == torch.float16 and d.proj.A.dtype == torch.float32
    x = torch.randn(3, 16, dtype=torch.float16)
    assert torch.equal(d(x), head(x).float())


def test_no_shared_storage_with_verifier_head():
    head = _head()
    d = DrafterHead.from_verifier_head(head)
    assert d.proj.base.weight.data_ptr() != head.weight.data_ptr()
    before = head.weight.detach().clone()
    with torch.no_grad():
        d.proj.base.weight.add_(1.0)
    assert torch.equal(head.weight, before)
    with torch.no_grad():
        head.weight.mul_(2.0)
    assert torch.equal(d.proj.base.weight, before + 1.0)


def test_trainable_params_are_exactly_A_and_B():
    class Stub(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = _head()
            self.drafter_head = DrafterHead.from_verifier_head(self.head)

    m = Stub()
    d = m.drafter_head
    assert [id(p) for p in d.trainable_params()] == [id(d.proj.A), id(d.proj.B)]
    assert not d.proj.base.weight.requires_grad
    names = [n for n, p in m.named_parameters() if p.requires_grad and not n.startswith("head.")]
    assert names == ["drafter_head.proj.A", "drafter_head.proj.B"]


def test_lora_delta_is_merge_free_low_rank_update():
    lin = LoRALinear(16, 50, r=2, alpha=4.0)
    with torch.no_grad():
        lin.B.normal_()
    x = torch.randn(5, 16)
    expected = x @ (lin.base.weight + 2.0 * lin.B @ lin.A).T
    torch.testing.assert_close(lin(x), expected, rtol=1e-5, atol=1e-5)
    w0 = lin.base.weight.clone()
    lin(x).sum().backward()
    assert lin.base.weight.grad is None and lin.A.grad is not None and lin.B.grad is not None
    assert torch.equal(lin.base.weight, w0)
