"""Composed item bundles (DLRM-CE's quotient–remainder tables, LightRec's codebooks): byte accounting by
hand, the device's scores against the item vectors they compose, and refusal of bad files."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from test_format import rewrite, split

from peel.device import BudgetError, Bundle, BundleError
from peel.device.composed import Composition, composed_vectors, pack_codes, unpack_codes
from peel.device.writer import write_composed_bundle

N_ITEMS = 103
COMPOSITIONS = [Composition("quotient_remainder", 6, op=op, buckets=m) for op in ("mult", "add", "concat")
                for m in (1, 2, 11, N_ITEMS)] + [Composition("codebooks", 6, codebooks=b, codewords=w)
                                                 for b, w in ((1, 2), (3, 5), (2, 256), (2, 300))]


def tensors_for(composition: Composition, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {name: rng.standard_normal(shape).astype(np.float32)
           for name, dtype, shape in composition.tensor_shapes(N_ITEMS) if dtype == "F32"}
    if composition.type == "codebooks":
        codes = rng.integers(0, composition.codewords, (N_ITEMS, composition.codebooks))
        out["codes"] = pack_codes(codes, composition.code_bits)
    return out


def test_bytes_by_hand() -> None:
    # quotient_remainder, 10 items, m = 4: Q has 3 rows, R 4; mult: (3 + 4) * 8 dims * 4 bytes + user 8 * 4
    assert Composition("quotient_remainder", 8, buckets=4).device_bytes(10) == 7 * 8 * 4 + 32
    # concat: each table holds 4 of the 8 dims
    assert Composition("quotient_remainder", 8, op="concat", buckets=4).device_bytes(10) == 7 * 4 * 4 + 32
    # codebooks: B = 3 of W = 5 codewords (3 bits a code): 15 * 8 * 4 bytes + ceil(10 * 3 * 3 / 8) = 12 bytes of codes
    assert Composition("codebooks", 8, codebooks=3, codewords=5).device_bytes(10) == 15 * 8 * 4 + 12 + 32
    assert Composition("codebooks", 8, codebooks=2, codewords=256).code_bits == 8


@pytest.mark.parametrize("bits", [1, 3, 8, 9, 16])
def test_codes_round_trip_at_their_bit_width(bits: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 2**bits, (37, 3))
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and len(packed) == -(-37 * 3 * bits // 8)
    np.testing.assert_array_equal(unpack_codes(packed, 37, 3, bits), codes)


@pytest.mark.parametrize("composition", COMPOSITIONS, ids=lambda c: f"{c.type}-{c.op}-{c.buckets}-{c.codewords}")
def test_device_scores_are_the_composed_dot_products(tmp_path: Path, composition: Composition, same_top_k) -> None:
    tensors = tensors_for(composition)
    path = tmp_path / "b.peelb"
    write_composed_bundle(path, composition=composition, tensors=tensors, n_items=N_ITEMS,
                          item_ids=np.arange(N_ITEMS) * 7)
    bundle = Bundle.open(path)
    assert bundle.bytes_loaded == composition.device_bytes(N_ITEMS) == bundle.minimum_bytes
    user = np.random.default_rng(1).standard_normal(6).astype(np.float32)
    expected = composed_vectors(composition, tensors, N_ITEMS).astype(np.float64) @ user
    rec = bundle.for_user(user, history=[0, 7])
    # float32 on the device against float64 here: each score within float32 rounding of a 6-term sum
    np.testing.assert_allclose(rec.scores(), expected, rtol=1e-5, atol=1e-5)
    ids, scores = rec.recommend(k=10)
    masked = expected.copy()
    masked[[0, 1]] = -np.inf
    same_top_k(ids // 7, scores, masked, 1e-5)
    assert rec.shrink(composition.device_bytes(N_ITEMS)).bytes_used == composition.device_bytes(N_ITEMS)
    with pytest.raises(BudgetError, match="minimum"):
        rec.shrink(composition.device_bytes(N_ITEMS) - 1)
    with pytest.raises(BudgetError, match="all or nothing"):
        Bundle.open(path, budget=composition.device_bytes(N_ITEMS) - 1)


@pytest.fixture
def composed_file(tmp_path: Path) -> Path:
    composition = Composition("codebooks", 6, codebooks=2, codewords=5)
    path = tmp_path / "c.peelb"
    write_composed_bundle(path, composition=composition, tensors=tensors_for(composition), n_items=N_ITEMS)
    return path


def _edited(path: Path, edit) -> Path:
    header, data = split(path)
    header = copy.deepcopy(header)
    edit(header)
    out = path.with_name("edited.peelb")
    rewrite(out, header, data)
    return out


@pytest.mark.parametrize(("edit", "message"), [
    (lambda h: h["composition"].__setitem__("type", "hash"), "type is one of"),
    (lambda h: h["composition"].__setitem__("extra", 1), "exactly the keys"),
    (lambda h: h["composition"].__setitem__("codewords", 1), "2 to 65536 codewords"),
    (lambda h: h["composition"].__setitem__("codebooks", True), "integers >= 1"),
    (lambda h: h["composition"].__setitem__("codewords", 9), "must have shape"),  # 4-bit codes: other sizes
    (lambda h: h["dims"].update(n_blocks=2, embedding_dim=12, block_dim=6), "one item group and one block"),
    (lambda h: h["units"].append({"item_group": 0, "block": 0, "data_offsets": [0, 0], "crc32": 0}),
     "units must have exactly 0"),
    (lambda h: h["tensors"].pop(), "tensors must be"),
])
def test_bad_composed_headers_are_refused(composed_file: Path, edit, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        Bundle.open(_edited(composed_file, edit))


def test_a_code_past_the_last_codeword_is_refused(tmp_path: Path) -> None:
    composition = Composition("codebooks", 6, codebooks=2, codewords=5)  # 3-bit codes can say 5, 6, 7
    tensors = tensors_for(composition)
    tensors["codes"] = pack_codes(np.full((N_ITEMS, 2), 6), 3)
    path = tmp_path / "c.peelb"
    write_composed_bundle(path, composition=composition, tensors=tensors, n_items=N_ITEMS)
    with pytest.raises(BundleError, match="a code is 6, past the last of 5 codewords"):
        Bundle.open(path)


def test_a_truncated_composed_bundle_is_refused(composed_file: Path) -> None:
    raw = composed_file.read_bytes()
    composed_file.write_bytes(raw[:-1])
    with pytest.raises(BundleError, match="truncated"):
        Bundle.open(composed_file)


def test_writer_refuses_missing_or_misshapen_tensors(tmp_path: Path) -> None:
    composition = Composition("quotient_remainder", 6, buckets=2)
    tensors = tensors_for(composition)
    with pytest.raises(BundleError, match="needs the tensor 'qr_remainder'"):
        write_composed_bundle(tmp_path / "a", composition=composition, tensors={"qr_quotient": tensors["qr_quotient"]},
                              n_items=N_ITEMS)
    with pytest.raises(BundleError, match="must be F32 of shape"):
        write_composed_bundle(tmp_path / "b", composition=composition, n_items=N_ITEMS,
                              tensors={**tensors, "qr_remainder": np.zeros((3, 6), np.float32)})
    with pytest.raises(BundleError, match="non-finite"):
        write_composed_bundle(tmp_path / "c", composition=composition, n_items=N_ITEMS,
                              tensors={**tensors, "qr_remainder": np.full((2, 6), np.nan, np.float32)})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("items", "dim", "codebooks", "codewords", "rows_per_pass"),
                         [(40, 6, 3, 5, None), (300, 32, 12, 16, None), (300, 32, 12, 16, 64)])
def test_codebook_training_composition_matches_the_straight_through_sum_in_value_and_gradient(
        items: int, dim: int, codebooks: int, codewords: int, rows_per_pass: int | None, monkeypatch) -> None:
    import torch

    from peel.models import composed
    from peel.models.composed import CodebookTable

    if rows_per_pass:  # the batch's 305 rows in slices of 64 (the last one partial), each codebook's gradient summed
        monkeypatch.setattr(composed, "ROWS_PER_PASS", rows_per_pass)

    torch.manual_seed(0)
    table = CodebookTable(items, Composition("codebooks", dim, codebooks=codebooks, codewords=codewords)).train()
    index = torch.cat([torch.tensor([0, 3, 3, 7, items - 1]), torch.randint(0, items, (items,))])
    weight = torch.randn(len(index), dim)
    (table(index) * weight).sum().backward()
    grads = [p.grad.clone() for p in (table.encoder, table.codebooks)]
    table.zero_grad()
    # the reference: Σ_b (hard codeword + soft mixture - its detached value), step by step, nothing recomputed
    residual, out = table.encoder[index], 0
    for book in table.codebooks:
        distance = ((residual[:, None, :] - book[None]) ** 2).sum(dim=2)
        soft = torch.softmax(-distance, dim=1) @ book
        chosen = book[distance.argmin(dim=1)] + soft - soft.detach()
        out, residual = out + chosen, residual - chosen
    (out * weight).sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(table(index), out, rtol=1e-5, atol=1e-6)  # float32: a sum vs a difference
        table.eval()
        torch.testing.assert_close(table(index), out, rtol=1e-5, atol=1e-6)  # the device's exact Σ of codewords
    # the closed form sums over the batch in another order than autograd: float32 rounding of each sum, so
    # every entry within 1e-5 of the largest gradient (a wrong term is off by its own size, ~1e-1 of it)
    for mine, reference in zip(grads, (table.encoder.grad, table.codebooks.grad), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
    assert grads[1].abs().sum() > 0


@pytest.mark.parametrize("item_table", ["codebooks", "quotient_remainder"])
def test_a_composed_loss_composes_the_batch_alone_with_the_whole_tables_value_and_gradient(item_table: str) -> None:
    """The loss looks up only the batch's items of a composed table (each distinct one composed once); the
    reference composes every item, as the device does, then picks the batch's rows."""
    import torch
    import torch.nn.functional as F

    from peel.models.composed import item_table as make_table
    from peel.models.lightgcn import LightGCN

    torch.manual_seed(0)
    users, items, dim = 30, 200, 16
    composition = (Composition("codebooks", dim, codebooks=4, codewords=8) if item_table == "codebooks"
                   else Composition("quotient_remainder", dim, buckets=7))
    model = LightGCN(users, items, n_blocks=1, block_dim=dim, layers=0,
                     item_table=make_table(items, composition, torch.randn(items, dim))).train()
    u, pos, neg = torch.randint(0, users, (64,)), torch.randint(0, 40, (64,)), torch.randint(0, items, (64,))
    distill = 0.5 if item_table == "codebooks" else 0.0  # LightRec's pull toward its teacher
    model.loss(u, pos, neg, l2=1e-2, lambda_div=0.0, distillation=distill).backward()
    mine = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    user_final, item_final = model.final_embeddings()  # every item composed
    rows = item_final[torch.cat([pos, neg])].view(2, 64, dim)
    margin = (user_final[u] * (rows[0] - rows[1])).sum(dim=1)
    reference = (-F.logsigmoid(margin).mean()
                 + 1e-2 * ((model.user_embedding[u] ** 2).sum() + (rows ** 2).sum()) / (2 * 64)
                 + (distill * model.item_table.distillation(torch.cat([pos, neg]), rows.reshape(128, dim))
                    if distill else 0))
    reference.backward()
    # float32 sums in another order (the codebooks' gradient sums over other rows): each entry within 1e-5 of
    # the largest; items outside the batch get no gradient on either side
    for got, want in zip(mine, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert any(g.abs().sum() > 0 for g in mine)
