"""Data page, section 2: the synthetic set's knobs, with the same patient drawn at both hospitals."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from explore.insight import report
from explore.data import DataSpec
from explore.data.synthetic import (KNOBS, SHIFT_KNOBS, changed_knobs, render_patient_at_sites, same_sites,
                                    slider_label)
from pages import multitask_section


def knob_slider(name: str, applied: dict, settings):
    knob, cast = KNOBS[name], int if KNOBS[name].integer else float
    if f"knob_{name}" not in st.session_state:  # start from the dataset in use
        st.session_state[f"knob_{name}"] = cast(applied.get(name, knob.default))
    high = settings.knob_upper(knob)
    if st.session_state[f"knob_{name}"] > high:
        st.session_state[f"knob_{name}"] = cast(high)
    return st.slider(slider_label(name), cast(knob.min), cast(high), step=cast(knob.step), help=knob.help,
                     key=f"knob_{name}")


def set_knobs(values: dict) -> None:
    for name, knob in KNOBS.items():
        st.session_state[f"knob_{name}"] = (int if knob.integer else float)(values.get(name, knob.default))


def knobs_section(spec: DataSpec, applied: dict, settings) -> DataSpec:
    """The knobs and the preview; returns `spec` with the sliders' knobs once 'Apply to dataset' is pressed."""
    with st.expander("🏥 How site B differs from site A — move a knob, see the same patient at both sites",
                     expanded=True):
        knob_col, preview_col = st.columns([3, 2], gap="large")
        with knob_col:
            sliders = {}
            st.markdown("**How site B takes its images** (0 = exactly like site A)")
            for column, name in zip(st.columns(2) * 3, [n for n in KNOBS if n in SHIFT_KNOBS]):
                with column:
                    sliders[name] = knob_slider(name, applied, settings)
            st.markdown("**A shortcut in site A, and how many images**")
            for column, name in zip(st.columns(2) * 2, [n for n in KNOBS if n not in SHIFT_KNOBS]):
                with column:
                    sliders[name] = knob_slider(name, applied, settings)
            b1, b2, b3 = st.columns(3)
            b2.button("Sites identical", key="no_shift", on_click=set_knobs, args=(same_sites(sliders),),
                      width="stretch")
            b3.button("Defaults", key="default_knobs", on_click=set_knobs, args=({},), width="stretch")
            changed = changed_knobs(sliders)
            if b1.button("Apply to dataset", key="apply_knobs", type="primary", width="stretch"):
                spec = replace(spec, synthetic=tuple(changed.items()))
            elif changed != applied:
                st.caption("The sliders differ from the dataset in use: press **Apply to dataset** to regenerate it.")
        with preview_col:
            preview(spec.seed, sliders)
    return spec


def preview(seed: int, sliders: dict) -> None:
    p1, p2 = st.columns(2)
    patient = p1.number_input("Patient", 0, 999, 0, key="preview_patient")
    label = p2.selectbox("Diagnosis", [1, 0], format_func={0: "NORMAL", 1: "PNEUMONIA"}.get, key="preview_label")
    show_masks = st.toggle("Show lung (green), lesion (red) and markers (yellow)", key="preview_masks")
    views = render_patient_at_sites(image_size=128, seed=int(seed), patient=int(patient), label=int(label), **sliders)
    for column, site in zip(st.columns(2), ("A", "B")):
        view = views[site]
        picture = report.overlay_masks(view["image"], view) if show_masks else report.grey(view["image"])
        column.image(picture, caption=f"site {site} ({'train/val' if site == 'A' else 'test'})", width="stretch")
    multitask_section.data_preview(int(seed))  # the findings multi-task runs add
