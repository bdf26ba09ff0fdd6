"""Objectives against plain, obviously-correct references; the gathered loss under 2 gloo ranks equals
the single-process full-batch loss, gradients included."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from snps3_ds.objectives.contrastive import GlobalContrastiveLoss
from snps3_ds.objectives.mlm import mlm_loss
from snps3_ds.processes import free_port


def reference_contrastive(text: torch.Tensor, clips: torch.Tensor, temperature: float) -> torch.Tensor:
    """Loops over the definition: t2v multi-positive over clips, v2t one query per clip, averaged."""
    batch, num_clips = clips.shape[:2]
    t2v = []
    for i in range(batch):
        logits = [float(text[i] @ clips[j, c]) / temperature for j in range(batch) for c in range(num_clips)]
        positives = [float(text[i] @ clips[i, c]) / temperature for c in range(num_clips)]
        t2v.append(math.log(sum(math.exp(x) for x in logits)) - math.log(sum(math.exp(x) for x in positives)))
    v2t = []
    for j in range(batch):
        for c in range(num_clips):
            logits = [float(text[k] @ clips[j, c]) / temperature for k in range(batch)]
            v2t.append(math.log(sum(math.exp(x) for x in logits)) - logits[j])
    return torch.tensor((sum(t2v) / len(t2v) + sum(v2t) / len(v2t)) / 2)


def _features(seed: int, batch: int = 6, clips: int = 3, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=-1)
    video = F.normalize(torch.randn(batch, clips, dim, generator=gen, dtype=torch.float64), dim=-1)
    return text, video


def test_contrastive_matches_reference() -> None:
    text, clips = _features(0)
    out = GlobalContrastiveLoss(temperature=0.1)(text, clips, torch.ones(clips.shape[:2], dtype=torch.bool))
    assert float(out.loss) == pytest.approx(float(reference_contrastive(text, clips, 0.1)), abs=1e-5)


def test_contrastive_ignores_padded_clips() -> None:
    text, clips = _features(1)
    mask = torch.ones(clips.shape[:2], dtype=torch.bool)
    mask[2, 1:] = False  # video 2 is an image: one real clip
    garbage = clips.clone()
    garbage[2, 1:] = torch.randn_like(garbage[2, 1:])
    loss_a = GlobalContrastiveLoss(0.1)(text, clips, mask).loss
    loss_b = GlobalContrastiveLoss(0.1)(text, garbage, mask).loss
    assert float(loss_a) == pytest.approx(float(loss_b), abs=1e-6)


def test_mlm_loss_matches_cross_entropy_and_handles_no_mask() -> None:
    logits = torch.randn(5, 11, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 4, 5])
    out = mlm_loss(logits, targets)
    assert float(out.loss.detach()) == pytest.approx(float(F.cross_entropy(logits, targets).detach()), abs=1e-6)
    empty = mlm_loss(logits[:0], targets[:0])
    assert float(empty.loss.detach()) == 0.0 and empty.count == 0
    empty.loss.backward()  # a batch with nothing masked still backpropagates


# ---------------------------------------------------------------------------------------------------------
# Every objective against a plain reference written with loops, in float64: loss AND gradients at 1e-5.
# ---------------------------------------------------------------------------------------------------------

from snps3_ds.objectives.lvwm import LVWMLoss, chosen_word_states  # noqa: E402
from snps3_ds.objectives.matching import CrossMatchingLoss, mine_hard_negatives  # noqa: E402
from snps3_ds.objectives.moco import MomentumEncoder, _push, moco_loss  # noqa: E402
from snps3_ds.objectives.vtm import choose_negative_captions, vtm_loss  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)


def lse(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.log(sum(torch.exp(v) for v in values))


def _leaf(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _assert_same_loss_and_grads(loss: torch.Tensor, reference: torch.Tensor, ours: list, theirs: list) -> None:
    torch.testing.assert_close(loss, reference, **TOL)
    grads = torch.autograd.grad(loss, ours)
    ref_grads = torch.autograd.grad(reference, theirs)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL)


def reference_level1(text, clips, mask, temperature):
    """t2v: each text over every real clip, positives its video's clips; v2t: each real clip over texts."""
    batch, num_clips = mask.shape
    real = [(j, c) for j in range(batch) for c in range(num_clips) if mask[j, c]]
    t2v = [lse([text[i] @ clips[j, c] / temperature for j, c in real])
           - lse([text[i] @ clips[i, c] / temperature for c in range(num_clips) if mask[i, c]]) for i in range(batch)]
    v2t = [lse([text[k] @ clips[j, c] / temperature for k in range(batch)]) - text[j] @ clips[j, c] / temperature
           for j, c in real]
    return (sum(t2v) / len(t2v) + sum(v2t) / len(v2t)) / 2


def _mask(batch: int = 6, clips: int = 3) -> torch.Tensor:
    mask = torch.ones(batch, clips, dtype=torch.bool)
    mask[1, 1:] = False  # an image among videos
    mask[4, 2] = False
    return mask


def test_objectives_level1_loss_and_grads_match_reference_with_learned_temperature() -> None:
    text, clips = _features(3)
    mask = _mask()
    t_ours, c_ours, temp_ours = _leaf(text, clips, torch.tensor(0.07, dtype=torch.float64))
    t_ref, c_ref, temp_ref = _leaf(text, clips, torch.tensor(0.07, dtype=torch.float64))
    loss = GlobalContrastiveLoss(0.05)(t_ours, c_ours, mask, temperature=temp_ours).loss
    _assert_same_loss_and_grads(loss, reference_level1(t_ref, c_ref, mask, temp_ref),
                                [t_ours, c_ours, temp_ours], [t_ref, c_ref, temp_ref])


def reference_moco(tq, cq, mask, tk, ck, text_queue, video_queue, temperature):
    v2t, t2v = [], []
    for b in range(mask.shape[0]):
        for c in range(mask.shape[1]):
            if mask[b, c]:
                pos = cq[b, c] @ tk[b] / temperature
                v2t.append(lse([pos] + [cq[b, c] @ q / temperature for q in text_queue]) - pos)
        positives = [tq[b] @ ck[b, c] / temperature for c in range(mask.shape[1]) if mask[b, c]]
        t2v.append(lse(positives + [tq[b] @ q / temperature for q in video_queue]) - lse(positives))
    return (sum(t2v) / len(t2v) + sum(v2t) / len(v2t)) / 2


def test_objectives_moco_matches_reference() -> None:
    text, clips = _features(4)
    keys_t, keys_c = _features(5)
    queues = F.normalize(torch.randn(2, 7, text.shape[1], generator=torch.Generator().manual_seed(6),
                                     dtype=torch.float64), dim=-1)
    mask = _mask()
    t_ours, c_ours = _leaf(text, clips)
    t_ref, c_ref = _leaf(text, clips)
    loss = moco_loss(t_ours, c_ours, mask, keys_t, keys_c, queues[0], queues[1], 0.05)
    reference = reference_moco(t_ref, c_ref, mask, keys_t, keys_c, queues[0], queues[1], 0.05)
    _assert_same_loss_and_grads(loss, reference, [t_ours, c_ours], [t_ref, c_ref])


def test_objectives_moco_momentum_update_stays_fp32_under_a_bf16_engine() -> None:
    query = torch.nn.Linear(4, 3)
    keys = MomentumEncoder({"tower": query}, momentum=0.9999)
    with torch.no_grad():
        query.weight.add_(1.0)
    keys.update({"tower": query})  # the first step copies (weights loaded after construction count)
    torch.testing.assert_close(keys.towers["tower"].weight, query.weight)
    for tensor in [*keys.parameters(), *keys.buffers()]:  # what DeepSpeed bf16 does to params and buffers
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.bfloat16)
    before = keys.ema.float().clone()
    target = before.clone()
    with torch.no_grad():
        query.weight.add_(0.5)
    for _ in range(3):
        keys.update({"tower": query})
        target = 0.9999 * target + 0.0001 * torch.cat([p.detach().float().flatten() for p in query.parameters()])
    assert keys.ema.dtype == torch.float32
    torch.testing.assert_close(keys.ema, target, atol=1e-6, rtol=0)
    assert not torch.equal(keys.ema, before)  # a 1e-4 step is not rounded away


def test_objectives_moco_queue_is_a_fifo_ring() -> None:
    queue, pointer = torch.zeros(5, 1), torch.zeros((), dtype=torch.long)
    _push(queue, pointer, torch.tensor([[1.0], [2.0], [3.0]]))
    _push(queue, pointer, torch.tensor([[4.0], [5.0], [6.0], [7.0]]))
    assert queue.flatten().tolist() == [6.0, 7.0, 3.0, 4.0, 5.0] and int(pointer) == 2


def _bilinear_scorer(text: torch.Tensor, video: torch.Tensor):
    """A stand-in for the fusion scorer: s(t, v) = <text_t, video_v>."""
    return lambda t, v: (text[t] * video[v]).sum(-1)


def reference_level2_all_pairs(text, video):
    """REFERENCE §2.2, n = 1: softmax over {all texts vs video i} and {text i vs other videos}."""
    batch = text.shape[0]
    s = [[text[i] @ video[j] for j in range(batch)] for i in range(batch)]
    losses = [lse([s[k][i] for k in range(batch)] + [s[i][j] for j in range(batch) if j != i]) - s[i][i]
              for i in range(batch)]
    return sum(losses) / batch


def test_objectives_level2_all_local_pairs_matches_reference() -> None:
    text, video = _features(7)[0], _features(8)[0]
    t_ours, v_ours = _leaf(text, video)
    t_ref, v_ref = _leaf(text, video)
    score = _bilinear_scorer(t_ours, v_ours)
    rows = torch.arange(text.shape[0])
    out = CrossMatchingLoss(hard_negatives=0)(score, score(rows, rows))
    _assert_same_loss_and_grads(out.loss, reference_level2_all_pairs(t_ref, v_ref), [t_ours, v_ours], [t_ref, v_ref])


def reference_hard_negatives(similarity, same_caption, k):
    """For text i: the k highest similarity[i, j], j != i and caption j != caption i; for video i: the k
    highest similarity[j, i] over the same j. Sorted by hand."""
    n = similarity.shape[0]
    allowed = [[j for j in range(n) if j != i and not same_caption[i, j]] for i in range(n)]
    videos = [sorted(allowed[i], key=lambda j: -float(similarity[i, j]))[:k] for i in range(n)]
    texts = [sorted(allowed[i], key=lambda j: -float(similarity[j, i]))[:k] for i in range(n)]
    return videos, texts


def reference_level2_hard(text, video, videos, texts):
    losses = []
    for i in range(text.shape[0]):
        pos = text[i] @ video[i]
        losses.append(lse([pos] + [text[i] @ video[j] for j in videos[i]] + [text[j] @ video[i] for j in texts[i]])
                      - pos)
    return sum(losses) / len(losses)


def _same_caption(n: int, pairs: list[tuple[int, int]]) -> torch.Tensor:
    same = torch.eye(n, dtype=torch.bool)
    for a, b in pairs:
        same[a, b] = same[b, a] = True
    return same


def test_objectives_level2_hard_negatives_match_reference() -> None:
    text, video = _features(9)[0], _features(10)[0]
    similarity = torch.randn(6, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    same = _same_caption(6, [(0, 3)])  # captions 0 and 3 are identical: never each other's negatives
    mined = mine_hard_negatives(similarity, torch.arange(6), 2, same)
    videos, texts = reference_hard_negatives(similarity, same, 2)
    assert mined.videos.tolist() == videos and mined.texts.tolist() == texts
    assert bool(mined.video_valid.all() and mined.text_valid.all())
    t_ours, v_ours = _leaf(text, video)
    t_ref, v_ref = _leaf(text, video)
    score = _bilinear_scorer(t_ours, v_ours)
    rows = torch.arange(6)
    out = CrossMatchingLoss(hard_negatives=2)(score, score(rows, rows), similarity, same)
    _assert_same_loss_and_grads(out.loss, reference_level2_hard(t_ref, v_ref, videos, texts),
                                [t_ours, v_ours], [t_ref, v_ref])


def test_objectives_vtm_matches_reference_and_never_picks_blocked_captions() -> None:
    gen = torch.Generator().manual_seed(12)
    pos, neg = _leaf(torch.randn(4, 2, generator=gen, dtype=torch.float64),
                     torch.randn(3, 2, generator=gen, dtype=torch.float64))
    pos_ref, neg_ref = _leaf(pos, neg)
    rows = [(pos_ref[i], 1) for i in range(4)] + [(neg_ref[i], 0) for i in range(3)]
    reference = sum(lse([r[0], r[1]]) - r[label] for r, label in rows) / len(rows)
    _assert_same_loss_and_grads(vtm_loss(pos, neg).loss, reference, [pos, neg], [pos_ref, neg_ref])

    similarity = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    same = _same_caption(6, [(0, 3)])
    texts, valid = choose_negative_captions(torch.arange(6), 6, "hard", similarity, same)
    allowed = [[j for j in range(6) if j != i and not same[j, i]] for i in range(6)]
    assert texts.tolist() == [max(allowed[i], key=lambda j: float(similarity[j, i])) for i in range(6)]
    assert bool(valid.all())
    for _ in range(20):
        texts, valid = choose_negative_captions(torch.arange(6), 6, "random", None, same, gen)
        assert all(t in allowed[i] for i, t in enumerate(texts.tolist()))
    _, valid = choose_negative_captions(torch.arange(2), 2, "random", None, torch.ones(2, 2, dtype=torch.bool))
    assert not bool(valid.any())  # every other caption is identical: no negative at all


def reference_lvwm(words, clips, mask, temperature):
    words, clips = F.normalize(words, dim=-1), F.normalize(clips, dim=-1)
    batch, num_clips = mask.shape

    def s(t, v, c):  # caption t vs clip c of video v: logsumexp over the caption's words
        return lse([w @ clips[v, c] / temperature for w in words[t]])

    losses = []
    for i in range(batch):
        own = [c for c in range(num_clips) if mask[i, c]]
        column = [s(k, i, c) for k in range(batch) for c in own]
        row = [s(i, j, c) for j in range(batch) if j != i for c in range(num_clips) if mask[j, c]]
        losses.append(lse(column + row) - lse([s(i, i, c) for c in own]))
    return sum(losses) / batch


def _words(seed: int, batch: int = 6, num_words: int = 3, dim: int = 8) -> torch.Tensor:
    return torch.randn(batch, num_words, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_objectives_lvwm_matches_reference() -> None:
    words = _words(13)
    clips = torch.randn(6, 3, 8, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    mask = _mask()
    w_ours, c_ours = _leaf(words, clips)
    w_ref, c_ref = _leaf(words, clips)
    out = LVWMLoss(0.1)(w_ours, c_ours, mask)
    _assert_same_loss_and_grads(out.loss, reference_lvwm(w_ref, c_ref, mask, 0.1), [w_ours, c_ours], [w_ref, c_ref])


def test_objectives_lvwm_words_come_from_the_loader() -> None:
    states = torch.arange(2 * 5 * 1.0).view(2, 5, 1)
    picked = chosen_word_states(states, torch.tensor([[1, 3], [4, 4]]))
    assert picked.flatten().tolist() == [1.0, 3.0, 9.0, 9.0]
    with pytest.raises(ValueError, match="masking.kind=mssm"):
        chosen_word_states(states, None)


# ---------------------------------------------------------------------------------------------------------
# Distributed equivalence: 2 gloo ranks, each with half the batch, equal the single process on all of it.
# ---------------------------------------------------------------------------------------------------------

def _equivalence_inputs():
    text, clips = _features(20)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[1, 2] = mask[4, 2] = False  # one padded clip per rank keeps the per-rank clip means comparable
    return text, clips, mask, _words(21), torch.tensor(0.1, dtype=torch.float64)


def _equivalence_losses(text, clips, mask, words, temperature, rank: int, world: int) -> dict:
    """Level 1 (learned temperature), LVWM and level 2 with hard negatives on this rank's rows."""
    from snps3_ds.distributed import gather_with_grad
    from snps3_ds.objectives.contrastive import global_text_video_scores

    level1 = GlobalContrastiveLoss(0.05, rank, world)(text, clips, mask, temperature=temperature).loss
    lvwm = LVWMLoss(0.1, rank, world)(words, clips, mask).loss
    similarity = global_text_video_scores(text, clips, mask, 0.1, world)
    video = clips.sum(1)  # level 2's stand-in "fusion" score pairs any rank's text with any rank's video
    score = _bilinear_scorer(gather_with_grad(text, rank, world), gather_with_grad(video, rank, world))
    rows = rank * text.shape[0] + torch.arange(text.shape[0])
    level2 = CrossMatchingLoss(2, rank, world)(score, score(rows, rows), similarity).loss
    mined = mine_hard_negatives(similarity, rows, 2)
    return {"level1": level1, "lvwm": lvwm, "level2": level2, "videos": mined.videos, "texts": mined.texts}


def _equivalence_worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    text, clips, mask, words, temperature = _equivalence_inputs()
    rows = slice(rank * 3, rank * 3 + 3)
    inputs = _leaf(text[rows], clips[rows], words[rows], temperature)
    out = _equivalence_losses(inputs[0], inputs[1], mask[rows], inputs[2], inputs[3], rank, world)
    results[rank] = {"videos": out["videos"], "texts": out["texts"]}
    for name in ("level1", "lvwm", "level2"):
        grads = torch.autograd.grad(out[name], inputs, allow_unused=True)
        results[rank] = {**results[rank], name: float(out[name]),
                         f"{name}_grads": [None if g is None else g / world for g in grads]}  # / world: DDP's mean
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results() -> tuple[dict, dict]:
    """One 2-rank run shared by the equivalence tests, and the single-process run on the full batch."""
    results = mp.Manager().dict()
    mp.spawn(_equivalence_worker, args=(2, free_port(), results), nprocs=2, join=True)
    text, clips, mask, words, temperature = _equivalence_inputs()
    inputs = _leaf(text, clips, words, temperature)
    out = _equivalence_losses(inputs[0], inputs[1], mask, inputs[2], inputs[3], 0, 1)
    full = {"videos": out["videos"], "texts": out["texts"]}
    for name in ("level1", "lvwm", "level2"):
        full[name] = float(out[name].detach())
        full[f"{name}_grads"] = torch.autograd.grad(out[name], inputs, allow_unused=True)
    return dict(results), full


def _check_equivalence(results: dict, full: dict, name: str) -> None:
    assert (results[0][name] + results[1][name]) / 2 == pytest.approx(full[name], abs=1e-5)
    for i, want in enumerate(full[f"{name}_grads"]):
        if want is None:
            continue
        got = [results[r][f"{name}_grads"][i] for r in (0, 1)]
        got = got[0] + got[1] if want.ndim == 0 else torch.cat(got)  # the temperature is shared, rows are split
        torch.testing.assert_close(got, want, **TOL)


def test_equivalence_level1_two_ranks_loss_and_grads(two_rank_results) -> None:
    _check_equivalence(*two_rank_results, "level1")


def test_equivalence_lvwm_two_ranks_loss_and_grads(two_rank_results) -> None:
    _check_equivalence(*two_rank_results, "lvwm")


def test_equivalence_level2_hard_negatives_two_ranks(two_rank_results) -> None:
    results, full = two_rank_results
    for key in ("videos", "texts"):  # every rank mines exactly what one process would for those rows
        torch.testing.assert_close(torch.cat([results[0][key], results[1][key]]), full[key])
    _check_equivalence(results, full, "level2")
