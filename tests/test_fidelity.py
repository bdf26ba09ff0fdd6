"""Method fidelity against the reference (issue 15): each test pins one audited defect and fails on the code
the audit read. `pytest -k fidelity` selects them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snps3_ds.evaluation.metrics import retrieval_metrics, text_video_metrics
from snps3_ds.ranking import NonFiniteScores, median_rank, query_ranks


# 2. non-finite scores are never perfect retrieval


def test_fidelity_nan_scores_fail_evaluation_and_never_rank_first() -> None:
    scores = torch.full((50, 50), float("nan"))
    with pytest.raises(NonFiniteScores, match="2500 of 2500 scores are NaN or infinite"):
        text_video_metrics(scores, torch.arange(50))
    # the rank rule itself (in-batch training metrics use it): a NaN truth or a NaN distractor is the worst case
    truth = torch.eye(50, dtype=torch.bool)
    assert (query_ranks(scores, truth) == 50).all()
    mixed = torch.tensor([[float("nan"), 0.1, 0.2], [0.9, float("nan"), 0.1]])
    assert query_ranks(mixed, torch.eye(2, 3, dtype=torch.bool)).tolist() == [3, 3]
    with pytest.raises(NonFiniteScores):
        retrieval_metrics(torch.tensor([[1.0, float("inf")]]), torch.tensor([[True, False]]))


# 3. MdR averages the two middle ranks; constant scores give the worst case


def test_fidelity_median_rank_is_numpy_median() -> None:
    generator = torch.Generator().manual_seed(0)
    for size in (2, 4, 7, 10, 50):
        scores = torch.randn(size, size, generator=generator)
        truth = torch.eye(size, dtype=torch.bool)
        ranks = query_ranks(scores, truth)
        # the reference: np.median(0-based rank) + 1
        assert retrieval_metrics(scores, truth)["MdR"] == pytest.approx(float(np.median(ranks.numpy() - 1) + 1))
    assert float(median_rank(torch.tensor([1.0, 2.0, 5.0, 9.0]))) == 3.5


def test_fidelity_constant_scores_give_the_worst_case() -> None:
    m = retrieval_metrics(torch.zeros(20, 20), torch.eye(20, dtype=torch.bool))
    assert m["R@1"] == m["R@5"] == m["R@10"] == 0 and m["MdR"] == m["MnR"] == 20


# 7. significance cut-off: rank <= top_k, as the reference


def test_fidelity_significance_cutoff_includes_rank_top_k() -> None:
    from pathlib import Path

    from snps3_ds.data.text.significance import SignificanceTable

    rank = torch.tensor([0, 1, 2, 3, 3, 5, 0])
    total = torch.tensor([9, 8, 7, 6, 6, 1, 0])
    table = SignificanceTable(Path("."), tuple("abcdefg"), rank, total, {})
    assert table.significant_mask(3).tolist() == [True, True, True, True, True, False, False]
    assert table.significant_ids(3).tolist() == [0, 1, 2, 3, 4]


def test_fidelity_broken_checkpoint_fails_evaluation_naming_it(tiny_corpus, tiny_config, tokenizer,
                                                               tmp_path) -> None:
    from safetensors.torch import save_file

    from conftest import TINY_RECIPE, tiny_overrides
    from snps3_ds.models.factory import build_model
    from snps3_ds.run import evaluate

    state = {f"model.{k}": v.contiguous() for k, v in build_model(tiny_config.model, tokenizer).state_dict().items()}
    state["model.img_fc.2.bias"] = torch.full_like(state["model.img_fc.2.bias"], float("nan"))  # a diverged run
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(NonFiniteScores, match="broken.safetensors: retrieval scores"):
        evaluate.main(["--config", str(TINY_RECIPE), "--checkpoint", str(broken), "--out", str(tmp_path / "m.json"),
                       *tiny_overrides(tiny_corpus)])
    assert not (tmp_path / "m.json").exists()


# 5. a random truncation window in pre-training


def test_fidelity_pretraining_truncates_long_captions_at_a_random_window(tokenizer) -> None:
    import random

    from snps3_ds.config import DataConfig, MaskingConfig
    from snps3_ds.data.collate import Collator
    from snps3_ds.data.decode.sample import DecodedSample
    from snps3_ds.data.seeds import WorkerRandom
    from snps3_ds.data.text.tokens import tokenize

    long = " ".join(f"word{i}" if i % 2 else "dog" for i in range(40))
    pieces = tokenizer(long, add_special_tokens=False)["input_ids"]
    captions = ["a red circle", long]
    head_ids, head_mask = tokenize(tokenizer, captions, 12)
    windows = set()
    for seed in range(20):
        ids, mask = tokenize(tokenizer, captions, 12, random.Random(seed))
        assert torch.equal(ids[0], head_ids[0]) and torch.equal(mask, head_mask), "short captions: as before"
        body = ids[1, 1:11].tolist()
        assert ids[1, 0] == tokenizer.cls_token_id and ids[1, 11] == tokenizer.sep_token_id
        start = next(s for s in range(len(pieces) - 9) if pieces[s:s + 10] == body)  # a contiguous run
        windows.add(start)
    assert len(windows) > 5 and max(windows) > len(pieces) // 2, "the tail of a long caption is seen too"
    assert DataConfig().random_truncate, "pre-training default: a random window (DESIGN §3.3)"
    sample = [DecodedSample("k", torch.zeros(1, 3, 4, 4), [long])]
    heads = Collator(tokenizer, 12, 1, MaskingConfig(), True, WorkerRandom(0, 0, 2))
    random_windows = Collator(tokenizer, 12, 1, MaskingConfig(), True, WorkerRandom(0, 0, 2), random_truncate=True)
    assert all(torch.equal(heads(sample).text_ids[0], head_ids[1]) for _ in range(5))
    assert any(not torch.equal(random_windows(sample).text_ids[0], head_ids[1]) for _ in range(5))
    batch = random_windows(sample)  # masks and labels come from the very window the text pass reads
    labelled = batch.mlm_labels != -100
    assert torch.equal(batch.mlm_ids[~labelled], batch.text_ids[~labelled])
    assert torch.equal(batch.mlm_labels[labelled], batch.text_ids[labelled])


# 1. images are repeated over their clips (and frames), never padded with blank ones


def test_fidelity_images_are_repeated_over_clips(tokenizer) -> None:
    from snps3_ds.config import MaskingConfig
    from snps3_ds.data.collate import Collator
    from snps3_ds.data.decode.sample import DecodedSample
    from snps3_ds.data.seeds import WorkerRandom

    image, video = torch.rand(1, 3, 8, 8), torch.rand(4, 3, 8, 8)
    samples = [DecodedSample("img", image, ["a red circle"]), DecodedSample("vid", video, ["a blue square"])]
    batch = Collator(tokenizer, 12, 4, MaskingConfig(), True, WorkerRandom(0, 0, 2))(samples)
    assert torch.equal(batch.frames[0], image.expand(4, -1, -1, -1)) and torch.equal(batch.frames[1], video)
    assert batch.clip_mask.all(), "every clip of an image is real: no +log T advantage for videos"


def test_fidelity_video_swin_sees_an_image_whole() -> None:
    """A one-frame clip through Video Swin (temporal patch 2) is the image repeated, not [image, black]."""
    import torch.nn.functional as F

    from snps3_ds.models.visual import VisualEncoder

    torch.manual_seed(0)
    encoder = VisualEncoder("test_swin3d", 32).eval()
    image = torch.randn(2, 1, 3, 32, 32)
    with torch.no_grad():
        single = encoder(image).mean(dim=(-2, -1))[:, 0]
        repeated = encoder(image.expand(-1, 4, -1, -1, -1)).mean(dim=(-2, -1))
    assert (F.cosine_similarity(single, repeated[:, 0]) > 0.999).all()  # 0.70 with torchvision's zero padding
    assert (F.cosine_similarity(repeated[:, 0], repeated[:, 3]) > 0.999).all()


# 8. head logits in fp32 whatever the engine's dtype


def test_fidelity_head_logits_are_fp32_under_a_bf16_engine(tiny_config, tokenizer) -> None:
    import copy

    from snps3_ds.models.factory import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config.model, tokenizer).eval()
    model.to(torch.bfloat16)  # what DeepSpeed's bf16 mode does to the module
    reference = copy.deepcopy(model).float()  # the same (bf16-rounded) weights, all-fp32 arithmetic
    states = torch.randn(6, model.hidden_size).to(torch.bfloat16)
    with torch.no_grad():
        score, vtm, mlm = model.match_score(states), model.vtm_logits(states), model.mlm_logits(states)
        assert score.dtype == vtm.dtype == mlm.dtype == torch.float32
        torch.testing.assert_close(score, reference.match_score(states.float()), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vtm, reference.vtm_logits(states.float()), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mlm, reference.mlm_logits(states.float()), rtol=1e-5, atol=1e-5)
        ids = torch.tensor([[101, 2417, 4418, 102]])
        fused = model.fuse(ids, torch.ones_like(ids), torch.randn(1, 2, model.hidden_size).to(torch.bfloat16),
                           torch.ones(1, 2, dtype=torch.bool))
        assert fused.pooled.dtype == torch.float32
    states.requires_grad_(True)
    model.train().match_score(states).sum().backward()
    assert model.similarity_dense[1].weight.grad.dtype == torch.bfloat16, "gradients reach the bf16 parameters"


# 4. ground truth per caption string (the reference) or per caption instance


def test_fidelity_ground_truth_per_caption_string_or_instance() -> None:
    from snps3_ds.evaluation.features import EvalFeatures
    from snps3_ds.evaluation.retrieval import RetrievalOptions, score_retrieval

    # 3 videos; "a man is playing a guitar" (ids 7 8 9) describes videos 0 and 1 (MSVD has such captions)
    ids = torch.tensor([[101, 7, 8, 9, 102], [101, 7, 8, 9, 102], [101, 5, 6, 102, 0], [101, 4, 102, 0, 0]])
    mask = (ids != 0).long()
    text = torch.eye(4, 3)
    text[1] = torch.tensor([1.0, 0.0, 0.0])  # caption 1 (video 1's copy of the string) looks like video 0
    feats = EvalFeatures(keys=["v0", "v1", "v2"], clip_features=torch.eye(3)[:, None, :], clip_tokens=None,
                         clip_mask=torch.ones(3, 1, dtype=torch.bool), text_features=text, text_ids=ids,
                         text_mask=mask, text_video=torch.tensor([0, 1, 2, 2]), text_order=torch.tensor([0, 0, 0, 1]))
    truth = feats.truth("string")
    assert truth.tolist() == [[True, True, False], [True, True, False], [False, False, True], [False, False, True]]
    assert feats.truth("instance").tolist() == torch.eye(3, dtype=torch.bool)[[0, 1, 2, 2]].tolist()
    by_string = score_retrieval(None, feats, 1.0, RetrievalOptions(worst=0)).metrics
    by_instance = score_retrieval(None, feats, 1.0, RetrievalOptions(worst=0, ground_truth="instance")).metrics
    assert by_string["t2v/R@1"] == 75.0 and by_instance["t2v/R@1"] == 50.0  # caption 1 ranks video 0 first
    assert by_string["ground_truth/string"] == 1.0 and by_instance["ground_truth/instance"] == 1.0
    assert RetrievalOptions().ground_truth == "string", "the reference's protocol is the default"
