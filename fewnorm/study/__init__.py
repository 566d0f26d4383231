"""The normalizer study (``fewnorm study``): the grid, its statistics and its reports.

``spec`` builds the grid, ``stats`` holds the statistics, ``analysis`` turns the raw
results into report tables, ``report_md`` and ``report_html`` write them. Nothing here
imports torch; :mod:`fewnorm.episodes.study` trains and measures.
"""
