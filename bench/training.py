"""Benchmark: seconds per federated training round, Varde vs plain Flower, in one run.

Starts one SuperLink and three SuperNodes on 127.0.0.1 (Flower's deployment
engine, exactly as tests/integration/test_training_flower.py), then runs the same
logistic model for the same rounds and local steps twice, through the same
ServerApp round loop (``gateway/training/serverapp.py``):

* **varde**: ``nodes.training.clientapp`` — policy check, ledger charge (SQLite,
  committed before release), per-row clipping and OpenDP Gaussian noise;
* **plain**: a ClientApp shipped in the FAB that loads and encodes the same data
  and runs the same full-batch gradient steps with numpy, no policy, no ledger,
  no clipping, no noise;
* **varde + SecAgg+**: the varde run again with Flower's SecAgg+ (the default
  with three sites), so its price is measured separately.

Both varde-vs-plain runs send the model in the clear (``secure_aggregation:
off``) and skip the final DP evaluation, so the ratio measures our policy /
ledger / DP layer only. Prints the median seconds per round and the ratios.
Not a test.

    python bench/training.py                     # 3 sites x 20,000 tumours, 4 rounds
    python bench/training.py --rows 100000 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from gateway.training.deployment import LocalFederation, write_app
from launcher.flower import start_local_supernode
from nodes.synth import generate_registry
from varde.training import TrainingPrivacy, TrainingSpec, TrainingStatus

SITES = ["oslo", "bergen", "trondheim"]
FIELDS = ["sex", "age_at_diagnosis", "stage", "cancer_type", "vital_status", "survival_days"]

PLAIN_CLIENT = '''
"""Plain Flower ClientApp: the same model and data, without Varde's policy, ledger or DP."""
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from nodes.data import load_registry
from nodes.training.dp import sigmoid
from nodes.training.features import design
from varde.training import TrainingSpec

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The pre-flight: a plain client accepts every job."""
    site = str(context.node_config["site"])
    return Message(content=RecordDict({"site": ConfigRecord({"site": site})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content.config_records["config"]
    spec = TrainingSpec.model_validate_json(str(config["job"]))
    w = msg.content.array_records["arrays"].to_numpy_ndarrays()[0].astype(np.float64)
    site = str(context.node_config["site"])
    data = load_registry(Path(str(context.node_config["data"])), site=site, max_rows_per_patient=2)
    x, y = design(data, spec)
    for _ in range(spec.local_steps):
        w = w - spec.learning_rate * (x.T @ (sigmoid(x @ w) - y)) / len(y)
    metrics = {"num-examples": float(len(y)), "epsilon-job": 0.0,
               "site-round": int(config["server-round"])}
    content = RecordDict({"arrays": ArrayRecord([w]), "metrics": MetricRecord(metrics),
                          "site": ConfigRecord({"site": site})})
    return Message(content=content, reply_to=msg)
'''


def run(fed: LocalFederation, app: Path, spec: TrainingSpec, job: str, root: Path) -> list[float]:
    progress = root / f"{job}.json"
    fed.submit(
        app,
        {
            "job": spec.model_dump_json(),
            "job-id": job,
            "researcher": "bench",
            "progress-file": str(progress),
            "min-sites": len(SITES),
            "expected-sites": len(SITES),
        },
    )
    deadline = time.monotonic() + 60 + 60 * spec.rounds
    while time.monotonic() < deadline:
        if progress.exists():
            status = TrainingStatus.model_validate_json(progress.read_text())
            if status.state in ("finished", "failed"):
                if status.state == "failed":
                    raise SystemExit(f"{job} failed: {status.detail}")
                return status.seconds_per_round
        time.sleep(0.5)
    raise SystemExit(f"{job} did not finish in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=50)
    args = parser.parse_args()
    spec = TrainingSpec(
        project="bench",
        features=["age_at_diagnosis", "sex", "stage", "cancer_type"],
        rounds=args.rounds,
        local_steps=args.local_steps,
        learning_rate=4.0,
        privacy=TrainingPrivacy(epsilon=10.0, evaluation_epsilon=0.0),
        holdout=0.0,
        secure_aggregation="off",
    )
    secure = spec.model_copy(update={"secure_aggregation": "on"})
    with tempfile.TemporaryDirectory(prefix="varde-bench-training-") as tmp:
        root = Path(tmp)
        fed = LocalFederation(home=root / "flower")
        try:
            fed.start_superlink()
            for site in SITES:
                d = root / site
                d.mkdir()
                generate_registry(site, args.rows, seed=1).to_parquet(d / "registry.parquet")
                policy = {
                    "site": site,
                    "profile": "development",
                    "privacy_unit": {"max_tumours_per_patient": 2},
                    "fields": FIELDS,
                    "statistics": ["count"],
                    "projects": {
                        "bench": {
                            "epsilon_budget": 100.0,
                            "max_epsilon_per_query": 10,
                            "training": ["logistic"],
                        }
                    },
                }
                (d / "policy.yaml").write_text(yaml.safe_dump(policy))
                start_local_supernode(
                    fed,
                    site,
                    {
                        "site": site,
                        "policy": str(d / "policy.yaml"),
                        "data": str(d / "registry.parquet"),
                        "state-dir": str(d / "state"),
                    },
                )
            varde_app = write_app(root / "varde-app")
            plain_app = write_app(
                root / "plain-app", clientapp="bench_plain_client:app", name="plain-training"
            )
            (plain_app / "bench_plain_client.py").write_text(PLAIN_CLIENT)
            varde = run(fed, varde_app, spec, "varde", root)
            plain = run(fed, plain_app, spec, "plain", root)
            secagg = run(fed, varde_app, secure, "varde-secagg", root)
        finally:
            fed.stop()
    v, p = statistics.median(varde), statistics.median(plain)
    print(
        f"sites {len(SITES)} x {args.rows} tumours, {args.rounds} rounds x {args.local_steps} steps"
    )
    print(f"varde  s/round {[round(s, 2) for s in varde]}  median {v:.2f}")
    print(f"plain  s/round {[round(s, 2) for s in plain]}  median {p:.2f}")
    s = statistics.median(secagg)
    print(f"secagg s/round {[round(x, 2) for x in secagg]}  median {s:.2f}")
    print(f"ratio varde/plain {v / p:.2f}   varde+SecAgg+/plain {s / p:.2f}")


if __name__ == "__main__":
    main()
