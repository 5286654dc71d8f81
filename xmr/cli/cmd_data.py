"""``xmr data list|info|prepare|import``: the registry of public benchmarks and your own data."""

from __future__ import annotations

import argparse
import json

NAME = "data"
HELP = "list, describe and prepare the public XMC benchmarks; import and describe your own data"
DESCRIPTION = """\
The registry of public extreme-classification benchmarks (Extreme Classification Repository
BoW sets, label-feature LF sets, and the embedded debian-deps).

  xmr data list                      table of datasets, statistics, propensity A/B, prepared?
  xmr data info NAME                 sources, files, statistics and notes of one dataset
  xmr data info PATH [--json]        N, D, L, labels/point, points/label, the share of labels
                                     with < 5 positives and the label-frequency tail of a
                                     dataset folder or file (any layout `xmr train` reads)
  xmr data prepare NAME [--root DIR] download (or use files placed in DIR/NAME/raw/), extract
                                     safely, convert to DIR/NAME/{X,Y}_{trn,tst}.npz + meta.json
  xmr data import SRC --out DIR      convert your own data (a folder of XC train.txt/test.txt,
     [--format xc|sparse|npz|tsv|lf] trn_X_Xf.txt/trn_X_Y.txt/tst_*, X_trn.npz/..., train.tsv/
     [--name NAME]                   test.tsv, LF trn.json.gz/tst.json.gz, or one .tsv / XC file)
                                     into the same prepared layout; `xmr train --set
                                     data.dataset=DIR` then reads it directly

Any command taking a dataset also takes such a SRC path directly: the first load converts it
into a cache under DIR/imported/ (re-converted whenever a source file's sha256 changes).

DIR defaults to $XMR_DATA, else ~/xmr_data. The network is used only by `prepare`, and only
when the raw files are not already there."""


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    ls = sub.add_parser("list", help="table of the registered datasets")
    ls.add_argument("--root", default=None, help="data root (default: $XMR_DATA or ~/xmr_data)")
    info = sub.add_parser("info", help="registry entry and/or statistics of a dataset (name or path)")
    info.add_argument("name", metavar="NAME|PATH")
    _data_options(info)
    info.add_argument("--json", action="store_true", help="print as JSON")
    imp = sub.add_parser("import", help="convert your own dataset into the prepared layout")
    imp.add_argument("src", metavar="SRC", help="a dataset folder or single file")
    imp.add_argument("--out", required=True, metavar="DIR", help="prepared folder to write")
    imp.add_argument("--name", default=None, help="dataset name recorded in meta.json "
                     "(default: the source's name)")
    _data_options(imp)
    prep = sub.add_parser("prepare", help="download, extract and convert one dataset")
    prep.add_argument("name")
    prep.add_argument("--root", default=None, help="data root (default: $XMR_DATA or ~/xmr_data)")
    prep.add_argument("--url-override", default=None, metavar="URL",
                      help="fetch the archive from URL instead of the registry's sources "
                           "(mirrors, tests)")
    prep.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    p.set_defaults(func=run, _parser=p)


def _data_options(p) -> None:
    p.add_argument("--root", default=None,
                   help="data root (default: $XMR_DATA or ~/xmr_data); converted copies go to ROOT/imported/")
    p.add_argument("--format", default=None, choices=("xc", "sparse", "npz", "tsv", "lf"),
                   help="force the layout of a folder (default: detect)")
    p.add_argument("--min-df", type=int, default=1, help="TF-IDF min_df of text datasets (default 1)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="single-file datasets: test share of the seeded split (default 0.2)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that split (default 0)")
    p.add_argument("--prop-a", type=float, default=None, help="propensity constant A (default 0.55)")
    p.add_argument("--prop-b", type=float, default=None, help="propensity constant B (default 1.5)")


def _options(args):
    from xmr.data.sources import Options

    return Options(format=args.format, min_df=args.min_df, test_fraction=args.test_fraction,
                   split_seed=args.split_seed, prop_a=args.prop_a, prop_b=args.prop_b)


def _fmt_int(v) -> str:
    return "?" if v is None else f"{v:,}"


def format_table(root=None) -> str:
    """The ``xmr data list`` table as text."""
    from xmr.data.prepare import is_prepared
    from xmr.data.registry import list_datasets

    header = ("name", "kind", "N_trn", "N_tst", "D", "L", "A", "B", "prepared")
    rows = [header]
    for d in list_datasets():
        s = d.stats
        rows.append((d.name, d.kind, _fmt_int(s.n_train), _fmt_int(s.n_test),
                     _fmt_int(s.num_features), _fmt_int(s.num_labels), f"{d.prop_a:g}",
                     f"{d.prop_b:g}", "yes" if is_prepared(d.name, root) else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 3, 4, 5, 6, 7}
    lines = []
    for k, r in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_info(name: str, root=None) -> str:
    """The ``xmr data info NAME`` text."""
    from xmr.data.prepare import dataset_dir, is_prepared
    from xmr.data.registry import get_dataset

    d = get_dataset(name)
    s = d.stats
    out = [f"{d.name}  (kind: {d.kind})",
           f"  propensity A, B : {d.prop_a:g}, {d.prop_b:g}",
           f"  published stats : N_trn={_fmt_int(s.n_train)} N_tst={_fmt_int(s.n_test)} "
           f"D={_fmt_int(s.num_features)} L={_fmt_int(s.num_labels)} "
           f"labels/point={s.labels_per_point:g} points/label="
           f"{'?' if s.points_per_label is None else f'{s.points_per_label:g}'}",
           f"  homepage        : {d.homepage}"]
    for src in d.sources:
        out.append(f"  source          : {src.url}  -> raw/{src.filename}"
                   f"  sha256={src.sha256 or 'unknown'}")
        for m in src.mirrors:
            out.append(f"    mirror        : {m}")
    for role, rel in d.files.items():
        out.append(f"  file {role:<11}: {rel}")
    folder = dataset_dir(d.name, root)
    out.append(f"  prepared        : {'yes' if is_prepared(d.name, root) else 'no'} ({folder})")
    if d.notes:
        out.append(f"  notes           : {d.notes}")
    return "\n".join(out)


def run(args) -> int:
    action = getattr(args, "data_command", None)
    if action is None:
        args._parser.print_help()
        return 2
    if action == "import":
        from xmr.data.sources import import_dataset, load_prepared_folder
        from xmr.data.stats import dataset_stats

        folder = import_dataset(args.src, args.out, name=args.name, options=_options(args))
        st = dataset_stats(load_prepared_folder(folder))
        print(f"{st['name']} imported into {folder}: N_trn={st['n_train']:,} "
              f"N_tst={st['n_test']:,} D={st['num_features']:,} L={st['num_labels']:,}")
        return 0
    if action == "info":
        from xmr.data.sources import looks_like_path

        if looks_like_path(args.name):
            from xmr.data.sources import resolve
            from xmr.data.stats import dataset_stats, format_stats

            st = dataset_stats(resolve(args.name, args.root, _options(args)))
            print(json.dumps(st, indent=2) if args.json else format_stats(st))
            return 0
    if action in ("info", "prepare"):
        from xmr.data.registry import get_dataset
        from xmr.errors import XMRError

        try:
            get_dataset(args.name)
        except ValueError as exc:  # unknown name: one clear line, like other user errors
            raise XMRError(str(exc)) from None
    if action == "list":
        print(format_table(args.root))
        return 0
    if action == "info":
        from xmr.data.prepare import is_prepared
        from xmr.data.registry import KIND_EMBEDDED, get_dataset
        from xmr.data.stats import dataset_stats, format_stats

        entry = get_dataset(args.name)
        st = None
        if entry.kind == KIND_EMBEDDED or is_prepared(entry.name, args.root):
            from xmr.data.sources import resolve

            st = dataset_stats(resolve(entry.name, args.root, _options(args)))
        if args.json:
            d = entry.to_dict()
            if st is not None:
                d["measured_stats"] = st
            print(json.dumps(d, indent=2))
        else:
            print(format_info(args.name, args.root))
            if st is not None:
                print("  measured:\n" + "\n".join("  " + ln for ln in format_stats(st).splitlines()[1:]))
        return 0
    if action == "prepare":
        from xmr.data.prepare import prepare

        folder = prepare(args.name, root=args.root, url_override=args.url_override,
                         force=args.force)
        meta = json.loads((folder / "meta.json").read_text())
        st = meta["stats"]
        print(f"{meta['name']} prepared in {folder}: N_trn={st['n_train']:,} "
              f"N_tst={st['n_test']:,} D={st['num_features']:,} L={st['num_labels']:,}")
        return 0
    raise AssertionError(action)  # pragma: no cover
