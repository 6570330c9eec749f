"""Run under ``torchrun``: ``fit`` each job of a JSON file in turn, in one process group (one launch
for several runs keeps the distributed tests fast). A job is ``{"out": RUN, "overrides": [...]}``
for a new run or ``{"out": RUN, "resume": true, "overrides": [...]}`` to continue one."""

import io
import json
import sys

import torch

from tubelet.engine.config import load_config
from tubelet.engine.distributed import shutdown_distributed
from tubelet.engine.resume import read_run_config
from tubelet.engine.train import fit


def main(jobs_file: str) -> None:
    torch.set_num_threads(1)
    try:
        for job in json.loads(open(jobs_file).read()):
            resume = job.get("resume", False)
            config = read_run_config(job["out"], job["overrides"]) if resume else load_config(None, job["overrides"])
            log = io.StringIO()
            fit(config, job["out"], resume=resume, stream=log)
            print(log.getvalue(), file=sys.stderr)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
