"""What the Saliency page (and the `attribute` CLI) shows of one run, as plain functions: the explained
images with their captions, the shares table and its sentences, the randomisation pictures."""
from __future__ import annotations

import torch

from explore.insight.attribution import METHODS, attribute, grey_rgb, LoadedRun, overlay, side_by_side
from explore.insight.regions import REGIONS, attribution_shares, balanced_sample, region_masks, where_attribution_falls
from explore.insight.report import outline_mask
from explore.insight.sanity import randomisation_check


def explain_images(loaded: LoadedRun, split_name: str, index: list[int], method: str, target="positive",
                   smooth: bool = False, device: torch.device | str | None = None, zoom: int | None = None) -> dict:
    """Pictures and numbers for a grid of images: originals, overlays and region shares, per image.

    Probabilities come from the run's predictions.pt (what the model said when the run ended),
    so browsing needs no extra forward pass.
    """
    split = loaded.split(split_name)
    index = list(index)
    if not index:
        return {"originals": [], "overlays": [], "pairs": [], "shares": {}, "targets": [], "seconds": 0.0}
    explainer = loaded.explainer(device)
    result = attribute(explainer, split.images[index], method, target, smooth, with_probs=False)
    zoom = zoom or max(1, 192 // split.images.shape[-1])
    shares = attribution_shares(result.maps, region_masks(split, index))
    signed = METHODS[method].signed
    overlays = [overlay(split.images[i], m, signed, zoom) for i, m in zip(index, result.maps)]
    originals = [grey_rgb(split.images[i], zoom) for i in index]
    if "lesion" in split.masks:  # outline the known lesion (synthetic, or a radiologist's box on real X-rays)
        originals = [outline_mask(o, split.masks["lesion"][i]) for o, i in zip(originals, index)]
    return {
        "originals": originals,
        "overlays": overlays,
        "pairs": [side_by_side(a, b) for a, b in zip(originals, overlays)],
        "shares": {name: [None if bool(torch.isnan(v)) else float(v) for v in values] for name, values in shares.items()},
        "targets": [explainer.classes[int(t)] for t in result.target],
        "seconds": result.seconds,
    }


def describe_image(loaded: LoadedRun, split_name: str, i: int, outcome: dict[str, torch.Tensor],
                   classes: tuple[str, ...] | None = None) -> str:
    """One caption line: id, true class, P(pneumonia) from predictions.pt, the prediction, right or wrong."""
    score_name = classes[-1] if loaded.config.tasks and classes else "disease"  # multi-label: P(finding)
    classes = classes or loaded.bundle.classes
    ident = loaded.split(split_name).ids[i].rsplit("/", 1)[-1]
    mark = "✅" if bool(outcome["correct"][i]) else "❌"
    return (f"{ident} · true {classes[int(outcome['labels'][i])]} · "
            f"P({score_name}) {float(outcome['disease_prob'][i]):.2f} "
            f"→ {classes[int(outcome['predicted'][i])]} {mark}")


def explained_cards(loaded: LoadedRun, split_name: str, index: list[int], outcome: dict[str, torch.Tensor],
                    pictures: dict, method: str, classes: tuple[str, ...] | None = None) -> list[dict]:
    """One card per explained image (`explain_images`' pictures): the picture, its caption, and a line saying
    what the model said and how much attribution fell on the lesion and the markers."""
    cards = []
    for row, i in enumerate(index):
        extra = " · ".join(f"{name} share {values[row]:.0%}" for name, values in pictures["shares"].items()
                           if name in ("lesion", "marker", "cardiomegaly", "effusion") and values[row] is not None)
        cards.append({"picture": pictures["pairs"][row],
                      "caption": f"original | {METHODS[method].title} → {pictures['targets'][row]}",
                      "line": describe_image(loaded, split_name, i, outcome, classes) + (f" · {extra}" if extra else "")})
    return cards


def run_shares(loaded: LoadedRun, device, target="positive", n_images: int = 16) -> list[dict]:
    """`where_attribution_falls` for every method on the run's val and test images (the splits it has)."""
    splits = {name: loaded.split(name) for name in ("val", "test") if len(loaded.split(name))}
    return where_attribution_falls(loaded.explainer(device), splits, n_images=n_images, target=target)


def sanity_pictures(loaded: LoadedRun, device, method: str, target="positive", smooth: bool = False,
                    max_stages: int = 5) -> dict:
    """The randomisation check on two val images per class, with the pictures the Saliency page shows:
    per image, the trained model's map and then each stage's map; the stages' numbers without their maps."""
    val = loaded.split("val")
    index = balanced_sample(val.labels, 2, seed=1)
    check = randomisation_check(loaded.explainer(device), val.images[index], method, target, smooth,
                                max_stages=max_stages)
    images, signed = val.images[index], METHODS[method].signed
    zoom = max(1, 128 // images.shape[-1])
    pictures = [[overlay(images[i], check["original"][i], signed, zoom)]
                + [overlay(images[i], stage["maps"][i], signed, zoom) for stage in check["stages"]]
                for i in range(len(index))]
    stages = [{k: v for k, v in stage.items() if k != "maps"} for stage in check["stages"]]
    captions = [["trained model"] + [f"top {s['layers']} layer(s) random · ρ = {s['spearman'][image]:.2f}"
                                     for s in stages] for image in range(len(index))]
    return {"pictures": pictures, "captions": captions, "stages": stages, "warning": check["warning"],
            "final": check["final_spearman"]}


def shares_table(rows: list[dict]) -> list[dict]:
    """Rows of `where_attribution_falls` as one row per method × region, val and test side by side."""
    table: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["method"], row["region"])
        entry = table.setdefault(key, {"method": METHODS[row["method"]].title, "region": row["region"],
                                       "area": row["area"]})
        entry[f"{row['split']}_share"] = row["share"]
    return list(table.values())


def describe_shares(rows: list[dict], min_difference: float = 0.05, limit: int = 6) -> list[str]:
    """Plain sentences: attribution piling up on markers or corners, and the biggest val-vs-test differences."""
    by_key = {(r["method"], r["region"], r["split"]): r for r in rows}
    findings: list[tuple[float, str]] = []  # (how notable, sentence)
    for (method, region, split), row in by_key.items():
        if split != "val" or row["share"] is None:
            continue
        title, other = METHODS[method].title, by_key.get((method, region, "test"))
        if region in ("marker", "corners") and row["area"] and row["share"] > 3 * row["area"]:
            findings.append((row["share"] / row["area"], (
                f"{title}: {row['share']:.1%} of the positive attribution on val falls {REGIONS[region]}, which "
                f"cover only {row['area']:.1%} of the image ({row['share'] / row['area']:.0f}× their area): "
                f"the model may be reading them.")))
        if other and other["share"] is not None and region in ("lung", "lesion", "marker") \
                and abs(row["share"] - other["share"]) >= min_difference:
            findings.append((abs(row["share"] - other["share"]) * 10, (
                f"{title}: the share {REGIONS[region]} is {row['share']:.0%} on val (site A) but "
                f"{other['share']:.0%} on test (site B).")))
    return [sentence for _, sentence in sorted(findings, key=lambda f: -f[0])[:limit]]
