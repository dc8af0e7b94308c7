"""`neuropetrix analyze STUDY_DIR --out OUT_DIR [--prior PRIOR_DIR] [--device cpu|cuda|auto]`: analyse offline."""
from __future__ import annotations

import argparse
from pathlib import Path

from neuropetrix.cli import CommandError, add_config_option, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyse a folder of PET/CT DICOM files and write the results")
    add_config_option(p)
    p.add_argument("study_dir", metavar="STUDY_DIR", type=Path, help="folder of DICOM files (any order)")
    p.add_argument("--out", metavar="OUT_DIR", type=Path, required=True, help="where to write the results")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None,
                   help="where the heavy parts run (default: analysis.device from the config)")
    p.add_argument("--organ-labels", metavar="PATH", type=Path, default=None,
                   help="organ segmentation of this study (TotalSegmentator/MOOSE output: a folder of organ masks, "
                        "or a multi-label map with its names in a .json beside it)")
    p.add_argument("--prior", metavar="PRIOR_DIR", type=Path, default=None,
                   help="an earlier PET/CT of the patient: analysed the same way and compared (PERCIST, Deauville)")
    p.add_argument("--organ-model", metavar="NAME", default=None, help="the model that made --organ-labels")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from neuropetrix.analysis.errors import AnalysisError
    from neuropetrix.engine.analysis_memory import collect_between_studies, keep_freed_memory
    from neuropetrix.engine.offline import analyze_folder
    from neuropetrix.reports.errors import ReportError

    keep_freed_memory()                 # this process runs one study, set up as the engine's analysis process is
    collect_between_studies()
    settings = settings_from(args)
    try:
        analysis = analyze_folder(args.study_dir, args.out, settings.analysis, args.device, hbys=settings.hbys,
                                  organ_labels=args.organ_labels, organ_source=args.organ_model, prior_dir=args.prior)
    except AnalysisError as exc:
        raise CommandError(f"analyze {args.study_dir}: {exc}") from None
    except ReportError as exc:
        raise CommandError(f"analyze {args.study_dir}: cannot write the results: {exc}") from None
    except OSError as exc:
        raise CommandError(f"analyze: {exc}") from None
    result = analysis.result
    suv_max = "-" if result.suv_max is None else f"{result.suv_max:.2f}"
    normal = ", ".join(region.organ for region in result.physiological) or "none"
    print(f"{len(result.lesions)} lesion(s), SUVmax {suv_max}, TMTV {result.tmtv_ml:.1f} ml, "
          f"TLG {result.tlg_total:.1f}; normal uptake not counted: {normal}; "
          f"wrote {', '.join(sorted(analysis.files))} to {analysis.out_dir}")
    response = result.response
    if response is not None:
        change = "-" if response.percent_change is None else f"{response.percent_change:+.1f} %"
        print(f"response ({response.criteria}): {response.category or 'not assessable'}; SULpeak {change}; "
              f"{len(response.new_lesions)} new lesion(s); Deauville {response.deauville.score or '-'}")
        for reason in response.not_assessable:
            print(f"  not assessable: {reason}")
    for kind, reason in analysis.refused.items():
        print(f"not made: {kind}: {reason}")
    return 0
