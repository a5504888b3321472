"""Model evaluation on C-MTEB-style tasks (STS, pair classification, retrieval, reranking, classification,
clustering) from local files: used by ``cmtp eval`` and by ``cmtp train --eval``."""

from .runner import EvalOptions, Report, compare_reports, evaluate, evaluate_with_baseline
from .tasks import TASK_TYPES, EvalTask, load_tasks

__all__ = ["TASK_TYPES", "EvalOptions", "EvalTask", "Report", "compare_reports", "evaluate", "evaluate_with_baseline",
           "load_tasks"]
