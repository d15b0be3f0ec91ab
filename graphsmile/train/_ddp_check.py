"""Check that DDP training steps compute the gradient of the global batch.

Two modes, compared by ``tests/test_train.py``:

* under torchrun (``WORLD_SIZE > 1``)::

      python -m torch.distributed.run --standalone --nproc_per_node 2 \\
          -m graphsmile.train._ddp_check --data tiny.pkl --out ddp.pt

  builds a :class:`~graphsmile.train.Trainer` exactly as ``graphsmile train`` does (DDP
  wrapper, distributed batch sampler with ``set_epoch``, the DDP loss weighting), runs the
  forward and backward of the first training step of epoch 0, and saves (rank 0) the averaged
  gradients and the dialogue ids each rank used;

* in one process::

      python -m graphsmile.train._ddp_check --data tiny.pkl --out single.pt --global_ids ddp.pt

  collates the union of those dialogues (rank 0's, then rank 1's, ...) into ONE batch and saves
  its gradients (plain :class:`~graphsmile.losses.MultiTaskLoss`).

The two must agree to float rounding. The check uses dropout 0 (dropout masks cannot match
across process layouts), text BatchNorms in eval mode (their training-mode statistics are per
process without SyncBatchNorm, which has no CPU implementation) and ``edge_weights="relative"``
(with the original's ``per_edge`` weights a dialogue's edges use weight entries that depend on
its position in its batch, so per-rank and global batches use different entries by design).
"""
from __future__ import annotations

import argparse
import sys

import torch

from ..config import GraphSmileConfig
from ..data import collate_dialogues, load_dataset
from .distributed import init_distributed
from .trainer import Trainer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--dataset", default="IEMOCAP")
    ap.add_argument("--out", required=True)
    ap.add_argument("--global_ids", help="single-process mode: the DDP run's output file (its dialogue ids)")
    ap.add_argument("--batch_size", type=int, default=3)
    ap.add_argument("--hidden_dim", type=int, default=16)
    ap.add_argument("--loss_type", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    splits = load_dataset(args.data, args.dataset, dims="infer")
    dt, dv, da = splits.dims
    cfg = GraphSmileConfig.preset(args.dataset, hidden_dim=args.hidden_dim, heter_n_layers=(2, 2, 2), win=(3, 3),
                                  shift_win=4, drop=0.0, edge_weights="relative", batch_size=args.batch_size,
                                  loss_type=args.loss_type, epochs=4, dim_t=dt, dim_v=dv, dim_a=da)
    ctx, device = init_distributed("cpu")
    try:
        trainer = Trainer(cfg, splits, seed=args.seed, ctx=ctx, device=device)
        trainer.model.train()
        for bn in trainer.model.batchnorms_t:
            bn.eval()
        epoch = 1  # matters for loss_type="epoch"
        if args.global_ids:
            ref = torch.load(args.global_ids, weights_only=True)
            by_id = {d.id: d for d in splits.train.dialogues}
            ids = [i for rank_ids in ref["ids"] for i in rank_ids]
            batch = collate_dialogues([by_id[i] for i in ids])
            per_rank = [ids]
        else:
            trainer.sampler.set_epoch(epoch)
            batch = next(iter(trainer.train_loader))
            per_rank = ctx.all_gather_object(list(batch.ids))
        trainer.optimizer.zero_grad(set_to_none=True)
        out = trainer.forward_backward(batch, epoch)
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        grads.update({f"loss.{n}": p.grad.detach().clone() for n, p in trainer.loss_fn.named_parameters()
                      if p.grad is not None})
        # sharded evaluation, gathered: must give the same whole-split metrics as one process
        ev = trainer.evaluate(splits.test, epoch)
        if ctx.is_main:
            torch.save({"grads": grads, "ids": per_rank, "world_size": ctx.world_size, "loss": out["parts"],
                        "eval_metrics": {k: float(v) for k, v in ev.metrics.items()}, "eval_ids": list(ev.ids),
                        "eval_probs": torch.from_numpy(ev.emo_probs)}, args.out)
            print(f"world_size {ctx.world_size}: {len(grads)} gradients over dialogues {per_rank} -> {args.out}")
        # every rank done before any tears its connections down (a rank that destroyed its gloo
        # group while rank 0 was still writing aborted once in CI: "terminate called without an
        # active exception")
        ctx.barrier()
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
