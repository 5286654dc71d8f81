"""``xmr data list|prepare|info``: the registry of public benchmarks."""

from __future__ import annotations

import argparse
import json

NAME = "data"
HELP = "list, describe and prepare the public XMC benchmarks"
DESCRIPTION = """\
The registry of public extreme-classification benchmarks (Extreme Classification Repository
BoW sets, label-feature LF sets, and the embedded debian-deps).

  xmr data list                      table of datasets, statistics, propensity A/B, prepared?
  xmr data info NAME                 sources, files, statistics and notes of one dataset
  xmr data prepare NAME [--root DIR] download (or use files placed in DIR/NAME/raw/), extract
                                     safely, convert to DIR/NAME/{X,Y}_{trn,tst}.npz + meta.json

DIR defaults to $XMR_DATA, else ~/xmr_data. The network is used only by `prepare`, and only
when the raw files are not already there."""


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    ls = sub.add_parser("list", help="table of the registered datasets")
    ls.add_argument("--root", default=None, help="data root (default: $XMR_DATA or ~/xmr_data)")
    info = sub.add_parser("info", help="sources, files, statistics and notes of one dataset")
    info.add_argument("name")
    info.add_argument("--root", default=None, help="data root (default: $XMR_DATA or ~/xmr_data)")
    info.add_argument("--json", action="store_true", help="print the entry as JSON")
    prep = sub.add_parser("prepare", help="download, extract and convert one dataset")
    prep.add_argument("name")
    prep.add_argument("--root", default=None, help="data root (default: $XMR_DATA or ~/xmr_data)")
    prep.add_argument("--url-override", default=None, metavar="URL",
                      help="fetch the archive from URL instead of the registry's sources "
                           "(mirrors, tests)")
    prep.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    p.set_defaults(func=run, _parser=p)


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
        if args.json:
            from xmr.data.registry import get_dataset

            print(json.dumps(get_dataset(args.name).to_dict(), indent=2))
        else:
            print(format_info(args.name, args.root))
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
