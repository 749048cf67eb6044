#!/usr/bin/env python3
"""Write a tiny, real, deterministic TensorBoard logdir (2 runs x 2 scalar tags x 50 steps).

Usage:  python examples/make_example_logdir.py [OUT_DIR]     (default: examples/runs)
Tests:  from examples.make_example_logdir import write_example_logdir

Only TensorBoard's own pure-Python protos and record framing are used, so neither
TensorFlow nor torch is needed. We deliberately skip `EventFileWriter`: it puts
time.time(), the hostname and the pid into the file name and the first event, and
writes from a background thread; we want byte-identical output on every run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

# Fixed inputs: everything below derives from these, never from the clock or the host.
RUNS: dict[str, float] = {"lr_0.1": 0.1, "lr_0.01": 0.01}
TAGS: tuple[str, ...] = ("loss", "accuracy")
STEPS: int = 50
BASE_WALL_TIME: float = 1_700_000_000.0  # 2023-11-14T22:13:20Z
SECONDS_PER_STEP: float = 1.5
# TensorBoard only requires "tfevents" in the name; the usual shape is kept for realism.
EVENT_FILE_NAME: str = "events.out.tfevents.1700000000.tbctl-example.0.0"
DEFAULT_OUT: Path = Path(__file__).resolve().parent / "runs"


def _curve(tag: str, lr: float, step: int) -> float:
    """Plausible training curves with a little deterministic wiggle (no RNG state to drift)."""
    rate = 8.0 * lr if lr >= 0.05 else 25.0 * lr  # the bigger lr converges faster
    wiggle = 0.03 * math.sin(1.7 * step + 10.0 * lr)
    if tag == "loss":
        return 2.3 * math.exp(-rate * step / 10.0) + 0.1 + wiggle
    return min(1.0, 0.1 + 0.85 * (1.0 - math.exp(-rate * step / 10.0)) + wiggle / 2.0)


def _scalar_value(tag: str, value: float, with_metadata: bool) -> summary_pb2.Summary.Value:
    """A TF2-style scalar: a rank-0 DT_FLOAT tensor tagged for the `scalars` plugin.

    Like TF's own writer, the plugin metadata rides only on a tag's first value:
    both the Python multiplexer and the Rust data server remember it per tag.
    """
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),  # rank 0
        float_val=[value],
    )
    summary_value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if with_metadata:
        summary_value.metadata.CopyFrom(scalar_metadata.create_summary_metadata(display_name=tag, description=""))
    return summary_value


def _events(lr: float) -> list[event_pb2.Event]:
    # The first record of every event file must declare the format version.
    events = [event_pb2.Event(wall_time=BASE_WALL_TIME, file_version="brain.Event:2")]
    for step in range(STEPS):
        values = [_scalar_value(tag, _curve(tag, lr, step), with_metadata=step == 0) for tag in TAGS]
        events.append(
            event_pb2.Event(
                wall_time=BASE_WALL_TIME + SECONDS_PER_STEP * (step + 1),
                step=step,
                summary=summary_pb2.Summary(value=values),
            )
        )
    return events


def write_example_logdir(path: Path) -> None:
    """Create (or overwrite) `path/<run>/<EVENT_FILE_NAME>` for every run in RUNS."""
    path = Path(path)
    for run, lr in RUNS.items():
        run_dir = path / run
        run_dir.mkdir(parents=True, exist_ok=True)
        # A fixed file name means a re-run replaces the file instead of adding a second one
        # (two files would make TensorBoard show each point twice).
        with open(run_dir / EVENT_FILE_NAME, "wb") as fh:
            writer = RecordWriter(fh)
            for event in _events(lr):
                # deterministic=True pins map/field order, so the bytes are reproducible.
                writer.write(event.SerializeToString(deterministic=True))
            writer.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = Path(args[0]) if args else DEFAULT_OUT
    write_example_logdir(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(RUNS)} runs x {len(TAGS)} tags x {STEPS} steps to {out} ({total} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
