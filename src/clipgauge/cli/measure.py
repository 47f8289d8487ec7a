"""`clipgauge measure | embed`: zero-shot measures and embeddings of a dataset."""

from __future__ import annotations

from clipgauge.cli.options import (
    add_data_options,
    add_model_options,
    cache_arg,
    report_skipped,
    template_arg,
)


def cmd_measure(args) -> int:
    from clipgauge.task_measures import measure

    report = measure(
        args.model,
        args.data,
        domains=args.domains,
        class_map=args.class_map,
        templates=template_arg(args.template),
        split=args.split,
        seed=args.seed,
        test_fraction=args.test_fraction,
        cache=cache_arg(args),
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        num_workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        progress=not args.no_progress,
    )
    print(report.table())
    report_skipped([(s["path"], s["reason"]) for s in report.provenance["skipped_images"]])
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    return 0


def cmd_embed(args) -> int:
    from clipgauge.data.open import open_dataset
    from clipgauge.data.splits import select_split
    from clipgauge.embeddings import check_embeddings_path, embed_dataset, save_embeddings
    from clipgauge.models.loading import load_clip
    from clipgauge.prompts import templates_for

    check_embeddings_path(args.out)  # before the work, not after it
    dataset = open_dataset(args.data, domains=args.domains, class_map=args.class_map)
    templates = templates_for(template_arg(args.template), dataset)
    dataset = select_split(dataset, args.split, seed=args.seed, test_fraction=args.test_fraction)
    bundle = load_clip(args.model, device=args.device, dtype=args.dtype)
    embeddings = embed_dataset(
        bundle,
        dataset,
        templates,
        cache=cache_arg(args),
        batch_size=args.batch_size,
        num_workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        progress=not args.no_progress,
    )
    report_skipped(embeddings.skipped)
    out, sidecar = save_embeddings(embeddings, args.out)
    n, d = embeddings.image_embeds.shape
    print(f"wrote {out} ({n} images x {d}, {len(embeddings.class_names)} classes) and {sidecar}")
    return 0


def add_commands(sub) -> None:
    """Register `measure` and `embed`."""
    p = sub.add_parser("measure", help="zero-shot misalignment measures per domain")
    add_model_options(p)
    add_data_options(p)
    p.add_argument("--json", default=None, help="also write the numbers with provenance here")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("embed", help="export image and class-text embeddings as safetensors")
    add_model_options(p)
    add_data_options(p)
    p.add_argument("--out", required=True, help="output FILE.safetensors (+ FILE.json sidecar)")
    p.set_defaults(func=cmd_embed)
