"""BoneSentinel dashboard: router and frame. Run with `streamlit run dashboard/app.py`."""

import streamlit as st

from core.errors import BoneSentinelError
from dashboard import resources

st.set_page_config(page_title="BoneSentinel", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page("views/analyze.py", title="Analyze", icon=":material/biotech:", url_path="analyze", default=True),
    st.Page("views/history.py", title="History", icon=":material/history:", url_path="history"),
    st.Page("views/study.py", title="Study", icon=":material/folder_open:", url_path="study"),
    st.Page("views/model.py", title="Model", icon=":material/monitoring:", url_path="model"),
]
page = st.navigation(PAGES)

with st.sidebar:
    st.markdown("### BoneSentinel")
    try:
        card = resources.card()
        st.caption(f"Model **{card['name']}** v{card['version']}  \nThreshold {card['threshold']:.3f}")
    except BoneSentinelError as err:
        st.error(str(err))
    st.warning("Research and education only — **not a medical device**. Scores are decision support, not a diagnosis.")

page.run()
