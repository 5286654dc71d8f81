"""``xmr evaluate``."""

from __future__ import annotations

NAME = "evaluate"
HELP = "P@k, nDCG@k, recall@k, PSP@k, PSnDCG@k of a saved model on a dataset split"


def register(p) -> None:
    from xmr.cli._common import add_dataset_args

    p.add_argument("--model", required=True, help="model folder (OUT/model of `xmr train`)")
    add_dataset_args(p)
    p.add_argument("--ks", default="1,3,5", help="cut-offs (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from xmr.cli._common import load_split
    from xmr.errors import ConfigError
    from xmr.eval.model_eval import evaluate_model
    from xmr.train.model import XMRModel

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise ConfigError(f"--ks: expected comma-separated integers, got {args.ks!r}") from None
    ds, _, _ = load_split(args, args.model)
    model = XMRModel.load(args.model, expect_num_labels=ds.num_labels, expect_num_features=ds.num_features)
    m = evaluate_model(model, ds, ks=ks, split=args.split)
    print(json.dumps(m, indent=2))
    return 0
