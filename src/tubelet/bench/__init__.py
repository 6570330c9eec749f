"""``tubelet bench``: throughput, latency, peak memory, parameters, FLOPs and MFU of models, on the
CPU or a CUDA GPU, optionally side by side with a reference implementation on the same weights.

    from tubelet.bench import BenchConfig, run_bench, markdown
    result = run_bench(BenchConfig(models=("timesformer_divided_base_p16_8x224",), batches=(1, 32), compare=True))
    print(markdown(result))
"""

from tubelet.bench.report import command_line, markdown, write_report
from tubelet.bench.run import BenchConfig, run_bench

__all__ = ["BenchConfig", "command_line", "markdown", "run_bench", "write_report"]
