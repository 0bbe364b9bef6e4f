"""Data page pieces for real X-rays: the public-set picker and the label vs view / age / sex tables.

Not a page of its own (the frame lists its pages explicitly); pages/data.py calls these.
Every number comes from explore.data.xrv / explore.data.metadata.
"""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from explore import charts
from explore.data import DataBundle, DataError, real_pair
from explore.data.metadata import TABULATED, label_table
from explore.data.xrv import XRV_DATASETS, package_data_dir

COLUMN_TITLES = {"view": "view position", "sex": "sex", "age": "age group (years)", "dataset": "dataset"}
WHY = {"view": "AP films are taken with a portable machine at the bedside of patients too ill to stand: in NIH "
               "they are far more common among pneumonia cases. A model can learn 'AP film → pneumonia' "
               "(the film's look, the 'PORTABLE' marker) instead of the lungs.",
       "sex": "A class whose share differs between sexes lets breast shadows or body size stand in for disease.",
       "age": "Pediatric and adult chests look different: a set that is all children (Guangzhou) tested on "
              "adults (NIH) mixes the disease with age.",
       "dataset": ""}


def xrv_picker(key: str, current: str) -> str | None:
    """Choose a public set, its image folder and optionally a labels CSV → 'xrv:NAME:DIR[;labels=CSV]'."""
    name_now, dir_now, csv_now = "nih", "", ""
    if current.startswith("xrv:"):
        name_now, _, rest = current[4:].partition(":")
        dir_now, _, option = rest.partition(";")
        csv_now = option.partition("=")[2]
    names = list(XRV_DATASETS)
    name = st.selectbox("Public dataset", names, index=names.index(name_now) if name_now in names else 0,
                        format_func=lambda n: XRV_DATASETS[n].title, key=f"{key}_xrv_name")
    entry = XRV_DATASETS[name]
    st.caption(f"**{entry.title}** — {entry.origin}. Licence: {entry.licence}. Cite: {entry.cite}. "
               "Point to the image folder as downloaded (sub-folders are searched; one archive is enough). "
               "PNEUMONIA = the pneumonia label; NORMAL = the set's 'no finding'; other findings are left out and "
               "counted. Train / val / test are split **by patient**.")
    image_dir = st.text_input("Image folder", dir_now, key=f"{key}_xrv_dir", placeholder=f"/data/{name}")
    labels = st.text_input("Labels CSV (empty: the one that comes with torchxrayvision)", csv_now,
                           key=f"{key}_xrv_csv", placeholder=entry.csv_file)
    if not labels.strip() and package_data_dir() is None:
        st.warning("torchxrayvision is not installed, so its label files are not here: "
                   "`pip install torchxrayvision`, or give the labels CSV above.")
    if not image_dir.strip():
        return None
    return f"xrv:{name}:{image_dir.strip()}" + (f";labels={labels.strip()}" if labels.strip() else "")


def show_selection(bundle: DataBundle) -> None:
    """How the CSV rows became images: missing files, left-out groups."""
    st.subheader("From the labels CSV to images")
    for source, selection in bundle.selection.items():
        if "csv_rows" not in selection:  # ChestMNIST: a rule, and the images it left out
            left_out = ", ".join(f"{k} {v:,}" for k, v in selection.get("left_out_other_findings", {}).items())
            st.markdown(f"**{source}** — {selection.get('rule', '')}; left out (other findings only): {left_out}.")
            continue
        groups = ", ".join(f"{group}: {count}" for group, count in selection["groups"].items())
        st.markdown(f"**{source}** — {selection['csv_rows']:,} rows in `{selection['labels_csv']}`; "
                    f"on disk: {groups}; {selection['decoded']:,} images used.")
        if selection["missing_files"]:
            st.caption(f"{selection['missing_files']:,} CSV rows have no image in the folder (not an error: a "
                       f"partial download gives a smaller dataset). First few: "
                       f"{', '.join(selection['missing_examples'][:5])}")
        if selection["files_not_in_csv"]:
            st.caption(f"{selection['files_not_in_csv']} image file(s) in the folder are not in the labels CSV "
                       "and were ignored.")


def show_label_vs_metadata(bundle: DataBundle) -> None:
    """For each of view, sex, age: counts and the share of each class, as a table and a bar chart."""
    st.subheader("Label vs view, sex and age")
    st.caption("Each bar: of all images of one class, which share has this view / sex / age. Bars of different "
               "heights are a shortcut a network can learn without looking at the lungs.")
    columns = [c for c in TABULATED if label_table(bundle, c)]
    for tab, column in zip(st.tabs([COLUMN_TITLES[c] for c in columns]), columns):
        with tab:
            rows = pd.DataFrame(label_table(bundle, column))
            table_col, chart_col = st.columns([1, 1], gap="large")
            table_col.dataframe(rows.rename(columns={"value": COLUMN_TITLES[column]}), hide_index=True,
                                column_config={f"share_of_{c}": st.column_config.NumberColumn(
                                    f"share of {c}", format="percent") for c in bundle.classes})
            chart_col.altair_chart(charts.label_shares(label_table(bundle, column), list(bundle.classes),
                                                       COLUMN_TITLES[column]), width="stretch")
            if WHY[column]:
                st.caption(WHY[column])


def _use_pair(spec) -> None:
    """Point the Data page's widgets at the pair (a callback: runs before the widgets are drawn again)."""
    st.session_state.update({"source": "medmnist", "source_npz": spec.source.partition(":")[2],
                             "other_test": True, "test_source": "medmnist",
                             "test_source_npz": spec.test_source.partition(":")[2], "size": spec.image_size})


def real_data_card(image_size: int) -> None:
    """PneumoniaMNIST (pediatric) for train/val, ChestMNIST (adult, NIH) for test: fetch, or say where to put them."""
    size = real_pair.medmnist_size(image_size)
    with st.expander("🩻 Real data: children → adults in one click (PneumoniaMNIST → ChestMNIST)"):
        st.caption("A network trained on the pediatric Guangzhou set reached AUC 0.95 there and 0.54 on adult NIH "
                   "images (Xin et al. 2021). Train on one, test on the other, and see the real gap.")
        status = real_pair.pair_status(size)
        for row in status:
            mark = "✅ present" if row["present"] else "⬜ missing"
            st.markdown(f"**{row['dataset']}** ({row['role']}) — {mark}: `{row['file']}`  \n"
                        f"{row['origin']}.  \nLicence: {row['licence']}. Cite: {row['cite']}.")
        missing = [row for row in status if not row["present"]]
        if missing and real_pair.can_fetch():
            if st.button(f"Fetch the {size} px files with medmnist", key="real_fetch"):
                bar = st.progress(0.0, text="Starting the download …")
                try:
                    real_pair.fetch_pair(size, progress=lambda done, total, what: bar.progress(
                        done / total, text=f"Downloading and checking {what} ({done + 1} of {total})"
                        if done < total else "Done"))
                    st.rerun()
                except DataError as error:
                    st.error(str(error))
        elif missing:
            st.info("Offline (or the `medmnist` package is missing): download "
                    + " and ".join(f"`{os.path.basename(r['file'])}`" for r in missing)
                    + f" from MedMNIST (zenodo.org/records/10519652) and put them in "
                    f"`{os.path.dirname(missing[0]['file'])}/`, or `pip install medmnist` and come back.")
        st.button("Use this pair: train on children, test on adults", key="real_use", disabled=bool(missing),
                  on_click=_use_pair, args=(real_pair.pair_spec(image_size),), type="primary")
