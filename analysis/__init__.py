"""Cohort analyses on top of the model: tumour shape features from predicted and expert masks,
and their association with the genomic and clinical data of a kaggle_3m cohort
(``python -m analysis.cohort``). Imports point one way: analysis -> inference -> {models, data};
only the viewer (app/) imports analysis."""
