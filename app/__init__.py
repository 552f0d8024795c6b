"""The Streamlit viewer (``streamlit run app/viewer.py``): UI only; it calls the API or
the in-process Predictor."""
