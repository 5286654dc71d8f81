"""``xmr predict``."""

from __future__ import annotations

NAME = "predict"
HELP = "top-k labels of a saved model for a dataset split or for new raw text"
DESCRIPTION = """\
Top-k labels of a saved model.

  xmr predict --model runs/x/model --dataset DIR -k 5 --out preds.npz
  xmr predict --model runs/x/model --text "some words" [--text "more words"] -k 5
  xmr predict --model runs/x/model --text-file queries.txt -k 5 [--out preds.npz]

With --text/--text-file (one query per line) the model must have been trained on a text
dataset (TSV or LF): its folder holds the fitted TF-IDF vectorizer (vectorizer/) and the label
names (labels.txt). One JSON line per query is printed: {"text", "labels", "scores"}.
--out writes ids i64[n,k] and scores f32[n,k] (-1 padded) as .npz."""


def register(p) -> None:
    from xmr.cli._types import positive_int

    from xmr.cli._common import add_dataset_args

    p.add_argument("--model", required=True, help="model folder (OUT/model of `xmr train`)")
    add_dataset_args(p)
    p.add_argument("--text", action="append", default=None, metavar="TEXT",
                   help="a raw-text query (repeatable); needs a model trained on text")
    p.add_argument("--text-file", default=None, metavar="FILE", help="raw-text queries, one per line")
    p.add_argument("-k", type=positive_int, default=5, help="labels per row (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="output .npz with arrays ids i64[n,k] and scores f32[n,k]")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    import numpy as np

    from xmr.errors import ConfigError
    from xmr.utils.atomic import atomic_open

    if args.k < 1:
        raise ConfigError(f"-k: expected a positive integer, got {args.k}")
    if args.text is not None or args.text_file is not None:
        from xmr.predictor import TextPredictor

        texts = list(args.text or [])
        if args.text_file is not None:
            from xmr.data.text import read_text_lines

            texts += read_text_lines(args.text_file)
        pred = TextPredictor.load(args.model)
        scores, ids = pred.predict_ids(texts, args.k)
        for t, row_s, row_i in zip(texts, scores, ids):
            keep = row_i >= 0
            print(json.dumps({"text": t, "labels": pred.names_of(row_i[keep]),
                              "scores": [round(float(s), 6) for s in row_s[keep]]},
                             ensure_ascii=False))
    else:
        if args.out is None:
            raise ConfigError("--out is required when predicting a dataset split "
                              "(or give --text / --text-file)")
        from xmr.cli._common import load_split
        from xmr.models.xmr_model import XMRModel

        ds, X, _ = load_split(args, args.model)
        model = XMRModel.load(args.model, expect_num_labels=ds.num_labels,
                              expect_num_features=ds.num_features)
        scores, ids = model.predict(X, args.k, progress=True)
    if args.out is not None:
        import sys

        with atomic_open(args.out, "wb") as f:
            np.savez(f, ids=ids, scores=scores)
        # with text queries stdout is JSON lines: the note goes to stderr
        print(f"wrote top-{args.k} of {ids.shape[0]} rows to {args.out}",
              file=sys.stdout if args.text is None and args.text_file is None else sys.stderr)
    return 0
