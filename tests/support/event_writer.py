"""A training run's writer, as its own process: one scalar a second, appended to an event file by
TensorBoard's own `EventFileWriter` (what `SummaryWriter` uses), flushed after each step.

    python event_writer.py RUN_DIR STEPS_FILE [PERIOD]

Each step is also written as `STEP WALL_TIME` to STEPS_FILE once it is flushed, so a test knows what the
event file holds. SIGTERM ends it after the step being written.
"""

from __future__ import annotations

import signal
import sys
import time


def main() -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    run_dir, steps_file = sys.argv[1], sys.argv[2]
    period = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    writer = EventFileWriter(run_dir, max_queue_size=1, flush_secs=3600)
    step = 0
    with open(steps_file, "a", buffering=1) as steps:
        while not stopping:
            wall = time.time()
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))])
            writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=summary))
            writer.flush()
            steps.write(f"{step} {wall}\n")
            step += 1
            deadline = wall + period
            while not stopping and time.time() < deadline:
                time.sleep(0.02)
    writer.close()


if __name__ == "__main__":
    main()
