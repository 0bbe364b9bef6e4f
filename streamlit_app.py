"""explore — the app frame: navigation over the pages in pages/.

Run: streamlit run streamlit_app.py
"""
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="explore · chest X-ray deep learning", page_icon="🫁", layout="wide")

HERE = Path(__file__).parent
PAGES = [  # (file, title, icon); a page appears once its file exists
    ("pages/data.py", "Data", "🩻"),
    ("pages/train.py", "Train", "🏋️"),
    ("pages/compare.py", "Compare", "📊"),
    ("pages/architectures.py", "ANN vs CNN", "🧮"),
    ("pages/transfer.py", "Transfer", "🔁"),
    ("pages/saliency.py", "Saliency", "🔥"),
    ("pages/mismatch.py", "Mismatch", "🏥"),
]

pages = [st.Page(str(HERE / path), title=title, icon=icon, url_path=Path(path).stem)
         for path, title, icon in PAGES if (HERE / path).exists()]
# The instructor's class view: reachable by URL only (/instructor?token=...), never listed for students;
# the page itself refuses without the token (EXPLORE_INSTRUCTOR_TOKEN).
pages.append(st.Page(str(HERE / "pages/instructor.py"), title="Class view", icon="🧑‍🏫", url_path="instructor",
                     visibility="hidden"))
page = st.navigation(pages)
from pages.common import demo_banner  # noqa: E402  (after set_page_config)

demo_banner()
page.run()
