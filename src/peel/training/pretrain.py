"""Stage a: LightGCN pretraining with item blocks and the diversity regularizer.

With ``lambda_div = 0`` this is the LightGCN baseline; with ``layers = 0`` matrix factorization.
Early stopping on validation Recall@50 (optionally on a fixed sample of validation users).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from peel.config import ModelConfig, PretrainConfig
from peel.data.interactions import Interactions
from peel.evaluation import DotProductScorer, evaluate, evaluation_users
from peel.models.graph import normalized_adjacency
from peel.models.lightgcn import LightGCN
from peel.training.loop import LoopResult, fit
from peel.training.sampling import TripleSampler


@dataclass
class PretrainResult:
    user_vectors: np.ndarray  # (users, D) final (propagated, combined) user embeddings
    item_vectors: np.ndarray  # (items, D) final item embeddings: the table stage b refines
    loop: LoopResult

    def save(self, path: Path) -> None:
        from peel._io import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, user_vectors=self.user_vectors, item_vectors=self.item_vectors)


def load_pretrained(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["user_vectors"], z["item_vectors"]


def pretrain(data: Interactions, *, model_config: ModelConfig, config: PretrainConfig, seed: int,
             checkpoint: Path | None = None, resume: bool = False, progress: bool = False) -> PretrainResult:
    """Train LightGCN (blocks + diversity regularizer) and return the final embeddings of the best epoch."""
    config = config.resolved(data.count("train"))
    torch.manual_seed(seed)
    train = data.csr("train")
    adjacency = normalized_adjacency(train) if model_config.layers > 0 else None
    model = LightGCN(data.n_users, data.n_items, n_blocks=model_config.n_blocks, block_dim=model_config.block_dim,
                     layers=model_config.layers, layer_combination=model_config.layer_combination,
                     adjacency=adjacency)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sampler = TripleSampler(train)
    valid_users = evaluation_users(data, "valid")
    if config.eval_users and config.eval_users < len(valid_users):
        valid_users = np.sort(np.random.default_rng([seed, 1]).choice(valid_users, config.eval_users, replace=False))

    nested = config.nested_blocks(model_config.n_blocks)

    def batches(epoch: int):
        for batch in sampler.epoch(np.random.default_rng([seed, epoch]), config.batch_size):
            yield [torch.from_numpy(a) for a in batch]

    def step(batch: list[torch.Tensor]) -> torch.Tensor:
        return model.loss(*batch, l2=config.l2, lambda_div=config.lambda_div, nested=nested)

    def validate() -> float:
        users, items = model.final_embeddings()
        scorer = DotProductScorer(users, items)
        return evaluate(scorer, data, split="valid", ks=(50,), users=valid_users, legacy_depth=None)["recall@50"]

    loop = fit(model=model, optimizer=optimizer, batches=batches, step=step, validate=validate, mode="max",
               max_epochs=config.max_epochs, patience=config.patience, eval_every=config.eval_every,
               lr_decay=config.lr_decay, lr_patience=config.lr_patience, checkpoint=checkpoint, resume=resume,
               progress=progress, desc="pretrain")
    with torch.no_grad():
        users, items = model.final_embeddings()
    return PretrainResult(users.detach().numpy().copy(), items.detach().numpy().copy(), loop)  # layers=0: parameters
