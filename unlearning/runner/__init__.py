"""The runner layer: the whole experiment in one process (`python -m unlearning`), apart from the core.

`experiment` loops over seeds and methods, `table` formats the results; the library core knows neither.
"""
