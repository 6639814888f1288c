"""Hand-made metrics folders, written as dvi.metrics.MetricsLogger writes them, for the report tests."""
import csv
from pathlib import Path

ACC = ["step", "acc@1", "acc@2", "block_acc", "drafted", "accepted", "committed", "top1_agree"]
SPEED = ["step", "wall_ms", "speedup", "drafter_ms", "verifier_ms", "trainer_ms", "committed"]


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def fake_metrics(run_folder, blocks):
    """RUN/metrics/{acceptance,speed}.csv of blocks (drafted, accepted, top1_agree or None, wall_ms); acc@k, block_acc
    and committed (accepted + 1) follow, blank where the logger leaves them blank."""
    acc, speed = [], []
    for i, (d, a, t, ms) in enumerate(blocks, 1):
        acc.append([i, "" if d < 1 else int(a >= 1), "" if d < 2 else int(a >= 2), a / d if d else "", d, a, a + 1,
                    "" if t is None else int(t)])
        speed.append([i, ms, "", ms / 2, ms / 2, 0, a + 1])
    write_csv(Path(run_folder) / "metrics" / "acceptance.csv", ACC, acc)
    write_csv(Path(run_folder) / "metrics" / "speed.csv", SPEED, speed)
