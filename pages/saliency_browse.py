"""Saliency page, the maps: val and test side by side, browsed by outcome or by a confusion-matrix cell."""
from __future__ import annotations

import streamlit as st

from explore.insight import attribution as attr
from explore.insight.browse import BROWSE_TITLES, confusion
from explore.insight import saliency_views
from pages.common import loaded_run


@st.cache_data(max_entries=64, show_spinner="Computing attribution maps…")
def explain(root, run_id, split, index, method, target, smooth, device: str):
    return saliency_views.explain_images(loaded_run(root, run_id), split, list(index), method, target, smooth, device)


def pick_cell(true: int, predicted: int):
    st.session_state["saliency_cell"] = (true, predicted)
    st.session_state["saliency_browse"] = "cell"


def browse_maps(loaded, root: str, run_id: str, method: str, target: str | int, smooth: bool, device) -> None:
    per_split = st.slider("Images per split", 2, 12, 4, key="saliency_n")
    browse = st.radio("Show", list(BROWSE_TITLES), format_func=BROWSE_TITLES.get, horizontal=True, key="saliency_browse")
    cell = tuple(st.session_state.get("saliency_cell", (1, 0)))
    classes = loaded.outcome_classes(target)  # a multi-label run: the chosen finding absent / present
    if browse == "cell":
        st.caption(f"Cell: true **{classes[cell[0]]}**, predicted **{classes[cell[1]]}** "
                   f"({attr.cell_name(cell[0], cell[1], classes)}). Click another cell below to change it.")
    for column, split in zip(st.columns(2, gap="large"), ("val", "test")):
        with column:
            st.subheader("Val · site A (training hospital)" if split == "val" else "Test · site B (other hospital)")
            stored = loaded.predictions.get(split)
            if stored is None or len(stored["labels"]) == 0:
                st.info(f"This run has no {split} predictions.")
                continue
            outcome = loaded.outcomes(split, target)
            st.caption("Confusion matrix (rows: true class, columns: predicted). Click a cell to see its X-rays.")
            for t, row in enumerate(confusion(outcome, len(classes))):
                for p, (button, count) in enumerate(zip(st.columns(len(classes)), row)):
                    button.button(f"{attr.cell_name(t, p, classes)} · {count}", key=f"cell_{split}_{t}_{p}",
                                  help=f"true {classes[t]}, predicted {classes[p]}", on_click=pick_cell, args=(t, p),
                                  type="primary" if browse == "cell" and (t, p) == cell else "secondary",
                                  width="stretch")
            index = attr.select(outcome, browse, cell, per_split)
            if not index:
                st.caption("No images in this group.")
                continue
            pictures = explain(root, run_id, split, tuple(index), method, target, smooth, device)
            cards = st.columns(2)
            cards_of = saliency_views.explained_cards(loaded, split, index, outcome, pictures, method, classes)
            for n, card in enumerate(cards_of):
                with cards[n % 2]:
                    st.image(card["picture"], width="stretch", caption=card["caption"])
                    st.caption(card["line"])
