"""The contrastive (InfoNCE) loss over per-example candidate lists.

Shapes: B examples in the batch, D embedding dimensions, U unique skills embedded this step (positives and
negatives together, each embedded once), C candidates per example (1 positive + the most negatives any example
got; shorter rows are masked).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

Device = Union[str, torch.device]


def contrastive_loss(sentence_vectors: torch.Tensor, skill_vectors: torch.Tensor, candidates: torch.Tensor,
                     candidate_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with per-example candidate lists, scored by the sentence vector (``scoring = "sentence"``).

    sentence_vectors: [B, D] L2-normalized; skill_vectors: [U, D] L2-normalized;
    candidates: [B, C] long, indices into skill_vectors; candidate_mask: [B, C] bool, True where a candidate
    exists. Returns a scalar. Every tensor must be on one device; the target is made on theirs.
    """
    cand = skill_vectors[candidates]  # [B, C, D]
    scores = torch.einsum("bd,bcd->bc", sentence_vectors, cand)  # [B, C] cosine
    return info_nce(scores, candidate_mask, temperature)


def late_interaction_loss(token_vectors: torch.Tensor, token_mask: torch.Tensor, skill_vectors: torch.Tensor,
                          candidates: torch.Tensor, candidate_mask: torch.Tensor, temperature: float,
                          token_temperature: float) -> torch.Tensor:
    """InfoNCE scored by skill-conditioned attention over the sentence's tokens (``scoring = "token"``).

    Why: the ranker's token scoring (ConTeXT-match) lets each skill pool the sentence's word pieces with its own
    softmax weights; trained through the same formula, the encoder learns token vectors for that pooling instead
    of for a mean it never uses. token_vectors: [B, T, D] L2-normalized; token_mask: [B, T] bool, True for real
    word pieces (no padding, no special tokens); the rest as ``contrastive_loss``.
    """
    scores = late_interaction_scores(token_vectors, token_mask, skill_vectors[candidates], token_temperature)
    return info_nce(scores, candidate_mask, temperature)


def late_interaction_scores(token_vectors: torch.Tensor, token_mask: torch.Tensor, skill_vectors: torch.Tensor,
                            token_temperature: float) -> torch.Tensor:
    """[B, C] scores of [B, C, D] skills: each skill's softmax-weighted (at ``token_temperature``) mean of its
    similarities to the [B, T, D] tokens — ``SkillIndex.token_scores``' formula, with gradients."""
    sims = torch.einsum("btd,bcd->btc", token_vectors, skill_vectors)  # [B, T, C] token-to-skill cosine
    present = token_mask.unsqueeze(-1)  # [B, T, 1]
    # A masked token gets no weight; a row without any token (cannot happen for real text) scores 0, not NaN.
    weights = torch.softmax((sims / token_temperature).masked_fill(~present, -1e4), dim=1)  # [B, T, C]
    return (weights * sims * present).sum(dim=1)


def info_nce(scores: torch.Tensor, candidate_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of [B, C] scores / temperature with the positive in column 0; missing candidates get no mass."""
    logits = (scores / temperature).masked_fill(~candidate_mask, float("-inf"))  # [B, C]
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)  # [B] the positive is column 0
    return torch.nn.functional.cross_entropy(logits, target)


def candidate_matrix(positives: Sequence[int], negatives: Sequence[Sequence[int]],
                     device: Optional[Device] = None) -> Tuple[List[int], torch.Tensor, torch.Tensor]:
    """The step's unique skills, and each example's [positive, negatives...] as indices into them.

    Why unique: a skill that is several examples' negative (or one's positive and another's negative) is embedded
    once. Returns (U skill indices in first-seen order, candidates [B, C] long, mask [B, C] bool) on ``device``.
    """
    unique: Dict[int, int] = {}
    for skill in list(positives) + [n for row in negatives for n in row]:
        unique.setdefault(skill, len(unique))
    width = 1 + max((len(row) for row in negatives), default=0)  # C
    cand = torch.zeros((len(positives), width), dtype=torch.long)  # [B, C]
    mask = torch.zeros((len(positives), width), dtype=torch.bool)  # [B, C]
    for i, (pos, row) in enumerate(zip(positives, negatives)):
        ids = [unique[pos]] + [unique[n] for n in row]
        cand[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = True
    return list(unique), cand.to(device), mask.to(device)
