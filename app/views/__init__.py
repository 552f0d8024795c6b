"""The viewer's pages and widgets, one module per idea; ``app/viewer.py`` puts them together.

Pages: ``slices`` (uploaded slices), ``volume`` (a NIfTI volume, sequence files or a DICOM
study), ``dataset`` (the operator's kaggle_3m folder, patient by patient); ``case`` draws the
slice stack that the last two share. Widgets: ``sidebar`` (display choices, the model card),
``layers`` (what is drawn over the image, and its legend), ``panels`` (metrics and the area
chart), ``downloads``, ``inputs`` (reading the upload boxes). Models, the API and this session's
predictions: ``resources``, ``predictions``.
"""
