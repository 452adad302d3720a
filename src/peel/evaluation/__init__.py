"""Full-ranking evaluation: one evaluator for every method, plus reference scorers."""

from peel.evaluation.evaluator import Scorer, evaluate, evaluation_users
from peel.evaluation.metrics import ranking_metrics
from peel.evaluation.scorers import DotProductScorer, PopularityScorer, RandomScorer

__all__ = ["Scorer", "evaluate", "evaluation_users", "ranking_metrics", "DotProductScorer",
           "PopularityScorer", "RandomScorer"]
