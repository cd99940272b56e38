import pytest

from tests.notifications.builders import Graph


@pytest.fixture
def graph(db_session) -> Graph:
    return Graph(db_session)
