"""The ``backend`` argument of the op tests.

A test in tests/ops/ that takes ``backend`` runs once per implementation in
``op_backends.BACKENDS`` (reference, dispatch, cpp, triton, triton-fallback, dispatch-cuda: those
this machine has), one test id each. ``@pytest.mark.backends("cpp", "dispatch")`` narrows the set
(a name this machine lacks is left out), ``@pytest.mark.backends(exclude=("reference",))`` drops
some (a case whose expected value is the reference itself).
"""

from op_backends import backend_params


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = (marker.args or None) if marker else None
    exclude = tuple(marker.kwargs.get("exclude", ())) if marker else ()
    metafunc.parametrize("backend", backend_params(names, exclude))
