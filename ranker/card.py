"""The model card of a trained reranker (``MODEL_CARD.md``), rendered from ``model_card.json``."""

from __future__ import annotations

import json


def model_card_md(card: dict) -> str:
    """The human-readable model card."""
    v, t, s, d = card["validation"], card["training"], card["subsample"], card["data"]
    curve = "\n".join(f"| {c['step']} | {'' if c['train_loss'] is None else round(c['train_loss'], 4)} | "
                      f"{c['loss']:.4f} | {c['ndcg@10']:.4f} | {c['recall@10']:.4f} |" for c in v["curve"])
    hp = card["hyperparameters"]
    if card.get("architecture") == "split":
        teacher = card["teacher"]
        what = (f"Split-layer late-interaction reranker ({hp['num_layers']} layers, the top "
                f"{hp['distill']['joint_layers']} joint), distilled from the cross-encoder {teacher['path']} "
                f"(its validation NDCG@10 "
                f"{teacher['validation']['fp32']['ndcg@10']:.4f} on the same lists), one output")
    else:
        what = f"Cross-encoder reranker fine-tuned from all-MiniLM-L6-v2 (first {hp['num_layers']} layers), one output"
    return f"""# semrec reranker {card['version']}

{what}
(logit: higher = more likely the shopper's next item). Load with `ranker.model.Reranker("{card['version']}")`.

Command: `{card['command']}`

## Data
- Source: {d['source']}
- {d['n_items']:,} items, {d['n_users']:,} users, {d['n_interactions']:,} interactions;
  {d['n_fit_sequences']:,} fit sequences
- Split: {d['split']}
- Subsample: {s['train_users']:,} training users, {s['train_groups']:,} groups of {s['group_size']}
  ({s['train_pairs']:,} pairs; {s['pairs_seen']:,} pairs seen in training);
  validation: {s['val_groups']} lists of {s['val_candidates']} text-retrieved candidates that contain the
  validation item (from {s['val_users_sampled']:,} sampled users)

## Validation (within the validation candidate lists)
| model | NDCG@10 | Recall@10 | loss |
|---|---|---|---|
| retrieval order | {v['retrieval_order']['ndcg@10']:.4f} | | |
| fp32 | {v['fp32']['ndcg@10']:.4f} | {v['fp32']['recall@10']:.4f} | {v['fp32']['loss']:.4f} |
| int8 | {v['int8']['ndcg@10']:.4f} | {v['int8']['recall@10']:.4f} | {v['int8']['loss']:.4f} |

Default inference variant: **{card['inference']}**.

| step | train loss | val loss | val NDCG@10 | val Recall@10 |
|---|---|---|---|---|
{curve}

## Training
- Steps {t['steps']} of {t['steps_planned']} planned, best at step {t['best_step']}; {t['stopped']}
- Training loop {t['train_seconds']} s ({t['train_pairs_per_s']} pairs/s), wall {t['wall_seconds']} s on {t['device']};
  data preparation {card['prepare_seconds']} s; total {card['total_seconds']} s
- Machine: {card['machine']}

## Hyper-parameters
```json
{json.dumps(hp, indent=2)}
```
"""
