"""The vecconv command: train LeNet-5 on real handwritten digits, or print its layers."""

from __future__ import annotations

import argparse
import math
import sys

#: Training digits in the shipped data set (400 per class; see vecconv.data).
TRAIN_DIGITS = 4000


class _Parser(argparse.ArgumentParser):
    """Bad arguments end with status 2 and one line naming the argument."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_in(lo, hi=None):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            span = f">= {lo}" if hi is None else f"from {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {v}")
        return v
    return parse


def _float_in(lo, hi, *, lo_open=False, hi_open=False):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if (not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi
                or (hi_open and v == hi)):
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {left}{lo}, {hi}{right}, "
                                             f"got {text!r}")
        return v
    return parse


def build_parser():
    from . import __version__
    parser = _Parser(prog="vecconv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vecconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train LeNet-5 on 4,000 MNIST digits, test on 1,000",
                       description="Train LeCun et al. 1998's LeNet-5 on the 4,000 training "
                                   "digits and report its accuracy on the 1,000 held out.")
    t.add_argument("--epochs", type=_int_in(1, 10_000), default=15,
                   help="passes over the training digits (default: %(default)s)")
    t.add_argument("--batch-size", type=_int_in(1, TRAIN_DIGITS), default=32,
                   help="digits per SGD step (default: %(default)s)")
    t.add_argument("--lr", type=_float_in(0, 10, lo_open=True), default=0.02,
                   help="initial learning rate, decayed to 0 on a cosine (default: %(default)s)")
    t.add_argument("--momentum", type=_float_in(0, 1, hi_open=True), default=0.9,
                   help="SGD momentum (default: %(default)s)")
    t.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                   help="seed of the initial weights, the shuffling and the shifts "
                        "(default: %(default)s)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="precision of the whole network (default: %(default)s)")
    t.add_argument("--max-shift", type=_int_in(0, 8), default=2,
                   help="largest random shift of a training digit, in pixels "
                        "(default: %(default)s)")
    t.add_argument("--train-size", type=_int_in(1, TRAIN_DIGITS), default=None,
                   help=f"use only this many of the {TRAIN_DIGITS:,} training digits "
                        "(default: all)")
    t.add_argument("--out", default=None,
                   help="directory for the weights, metrics and plots (default: none written)")
    t.add_argument("--json", dest="json_path", default=None,
                   help="also write the final metrics to this file (default: none)")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a bar on the terminal)")
    s = sub.add_parser("summary", help="print a network's layers and parameter counts",
                       description="Print the layers, output shapes and parameter counts of "
                                   "LeNet-5, or of a network saved by 'vecconv train --out' "
                                   "or Sequential.save.")
    s.add_argument("model", nargs="?", default=None,
                   help="a saved network (.npz); default: a new LeNet-5")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="precision of a new LeNet-5 (default: %(default)s)")
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:                     # plain `vecconv`: what it does and how to ask
        parser.print_usage()
        print("commands: train (LeNet-5 on real digits), summary (a network's layers); "
              "'vecconv COMMAND --help' for its options")
        return 2
    args = parser.parse_args(argv)
    if args.command == "summary":
        from .nn import lenet5, load
        if args.model is None:
            net = lenet5(dtype=args.dtype)
        else:
            try:
                net = load(args.model)
            except (OSError, ValueError) as exc:
                parser.error(f"summary: {exc}")
        try:
            print(net.summary())
        except ValueError as exc:          # a saved network without its input shape
            parser.error(f"summary: {exc}")
        return 0
    from .train import check_outputs, train
    # every output path is checked, by writing there, before a minute of training is spent
    try:
        check_outputs(args.out, args.json_path, names=("--out", "--json"))
    except ValueError as exc:
        parser.error(str(exc))
    train(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
          seed=args.seed, dtype=args.dtype, max_shift=args.max_shift, train_size=args.train_size,
          out=args.out, json_path=args.json_path, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
