"""The ``vecconv`` command: ``vecconv train`` trains LeNet-5 on real digits."""

from __future__ import annotations

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vecconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train LeNet-5 on 4,000 MNIST digits, test on 1,000")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.02, help="initial learning rate (cosine decay to 0)")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--max-shift", type=int, default=2, help="random shift of training digits, pixels")
    t.add_argument("--train-size", type=int, default=None, help="use only this many training digits")
    t.add_argument("--out", default=None, help="directory for weights, metrics and plots")
    t.add_argument("--json", dest="json_path", default=None, help="write the metrics alone here")
    t.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("summary", help="print LeNet-5's layers and parameter counts")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)
    if args.command == "summary":
        from .nn import lenet5
        print(lenet5(dtype=args.dtype).summary())
        return 0
    from .train import train
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    train(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
          seed=args.seed, dtype=args.dtype, max_shift=args.max_shift, train_size=args.train_size,
          out=args.out, json_path=args.json_path, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
