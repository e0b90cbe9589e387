"""History: every logged study, filtered and paged on the server, with CSV export."""

import datetime as dt

import streamlit as st

from dashboard import resources
from dashboard.store import HistoryFilter, agreement_stats, distinct_values, export_csv, query_history

PAGE_SIZE = 50
ANY = "Any"
REVIEWED = {ANY: None, "Reviewed": True, "Not reviewed": False}

st.title("Prediction history")
engine = resources.engine()
choices = distinct_values(engine)

with st.container(border=True):
    c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
    today = dt.datetime.now(dt.UTC).date()
    dates = c1.date_input("Date range (UTC)", value=(), max_value=today, help="Leave empty for all dates.")
    body_part = c2.selectbox("Body part", [ANY, *choices["body_parts"]])
    decision = c3.selectbox("Decision", [ANY, "abnormal", "normal"])
    reviewed = c4.selectbox("Review", list(REVIEWED))
    version = c5.selectbox("Model version", [ANY, *choices["model_versions"]])

date_from = dates[0] if len(dates) >= 1 else None
date_to = dates[1] if len(dates) == 2 else date_from
flt = HistoryFilter(
    date_from=date_from,
    date_to=date_to,
    body_part=None if body_part == ANY else body_part,
    decision=None if decision == ANY else decision,
    reviewed=REVIEWED[reviewed],
    model_version=None if version == ANY else version,
)

stats = agreement_stats(engine, flt)
_, total = query_history(engine, flt, page=1, page_size=1)
m1, m2, m3 = st.columns(3)
m1.metric("Studies", f"{total:,}")
m2.metric("Reviewed", f"{stats['reviewed']:,}")
rate = stats["agreement_rate"]
m3.metric("Reviewer agreement with the model", "—" if rate is None else f"{rate:.0%}", help="Latest review per study.")

pages = max(1, -(-total // PAGE_SIZE))
page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1)
frame, _ = query_history(engine, flt, page=int(page), page_size=PAGE_SIZE)
frame.insert(0, "open", [f"study?id={i}" for i in frame["id"]])
st.dataframe(
    frame,
    hide_index=True,
    width="stretch",
    column_config={
        "open": st.column_config.LinkColumn("Open", display_text="Open ↗", width="small"),
        "id": st.column_config.NumberColumn("Study #", format="%d"),
        "created_at": st.column_config.DatetimeColumn("Logged (UTC)", format="YYYY-MM-DD HH:mm"),
        "probability": st.column_config.ProgressColumn("Score", min_value=0.0, max_value=1.0, format="%.3f"),
        "threshold": st.column_config.NumberColumn("Threshold", format="%.3f"),
        "body_part": "Body part",
        "decision": "Decision",
        "n_images": "Images",
        "n_rejected": "Rejected",
        "n_warned": "Warned",
        "model_version": "Model",
        "reviewed": st.column_config.CheckboxColumn("Reviewed"),
        "agree": "Reviewer agrees",
    },
)

with st.expander("Open a study by number"):
    study_id = st.number_input("Study #", min_value=1, step=1, value=None)
    if study_id:
        st.page_link("views/study.py", label=f"Open study #{int(study_id)}", query_params={"id": int(study_id)})

if st.button("Prepare CSV export", help="All studies matching the filters (no images, no identifiers)."):
    st.download_button(
        "Download CSV",
        export_csv(engine, flt),
        file_name=f"bonesentinel-history-{today.isoformat()}.csv",
        mime="text/csv",
        icon=":material/download:",
    )
