"""Choose the planner's defaults by a stated rule on paired per-edit differences.

    python scripts/selection.py --log runs/selection.jsonl --out docs/selection       # measure, then decide
    python scripts/selection.py --log runs/selection.jsonl --out docs/selection --analyze-only

Every variant (sizing x context policy, and without low-frequency tokens on exact sizing; three
draws of the random policy) edits every case (bundled photos x suite masks of each suite seed)
with every noise seed on the shipped reference model, dense alongside. The edits go to ``--log``
one JSON line each (an interrupted run resumes); the paired table and the rule's choice
(``hilo_export.evaluation.stats``) go to ``--out``/selection.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hilo_export.evaluation.study import context_geometry, read_records, run_study, study_variants
from hilo_export.files import atomic_path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="JSON lines of every edit (appended; resumes)")
    parser.add_argument("--out", required=True, help="folder for selection.json")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--photos", default="coffee,chelsea,rocket")
    parser.add_argument("--suite-seeds", default="1,2")
    parser.add_argument("--noise-seeds", default="0,1")
    parser.add_argument("--draws", type=int, default=3, help="draws (context seeds) of the random policy")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--margin", type=float, default=0.2, help="dB a variant may trail the most faithful one")
    parser.add_argument("--variants", help="comma-separated labels to run (default: all of study_variants)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--analyze-only", action="store_true", help="decide from the log as it stands")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = study_variants(args.draws)
    if args.variants:
        wanted = args.variants.split(",")
        unknown = set(wanted) - {v.label for v in variants}
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; known: {','.join(v.label for v in variants)}")
        variants = [v for v in variants if v.label in wanted]
    start = time.time()
    if not args.analyze_only:
        from hilo_export.evaluation.ablation import Ablation
        from hilo_export.model import load_reference, reference_weights_dir
        from hilo_export.reference import model as ref

        ablation = Ablation(load_reference(), ref.load_decoder(reference_weights_dir()), steps=args.steps)
        run_study(ablation, Path(args.log), args.resolution, args.photos.split(","),
                  [int(s) for s in args.suite_seeds.split(",")], [int(s) for s in args.noise_seeds.split(",")],
                  variants, progress=print)
    from hilo_export.evaluation.stats import selection_markdown, selection_table

    # the design asked for, and no more: a log may hold further cases (a longer run, another design)
    photos, suites = set(args.photos.split(",")), {f"suite{s}" for s in args.suite_seeds.split(",")}
    noise = {int(s) for s in args.noise_seeds.split(",")}
    records = [r for r in read_records(Path(args.log))
               if r["case"].split("/")[0] in photos and r["case"].split("/")[-1] in suites
               and (r.get("noise_seed") is None or r["noise_seed"] in noise)]
    table = selection_table(records, variants, margin_db=args.margin)
    table["command"] = ("python scripts/selection.py --log selection.jsonl --out docs/selection "
                        f"--resolution {args.resolution} --photos {args.photos} --suite-seeds {args.suite_seeds} "
                        f"--noise-seeds {args.noise_seeds} --draws {args.draws} --steps {args.steps} --margin {args.margin}"
                        + (f" --variants {args.variants}" if args.variants else ""))
    table["resolution"], table["steps"] = args.resolution, args.steps
    table["context_geometry"] = context_geometry(args.resolution, args.photos.split(","),
                                                 [int(s) for s in args.suite_seeds.split(",")])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "selection.json") as tmp:
        tmp.write_text(json.dumps(table, indent=1) + "\n")
    print(selection_markdown(table))
    print("context geometry:", json.dumps(table["context_geometry"]))
    print(f"written {out}/selection.json in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
