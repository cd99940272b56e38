"""The shared argument check every task runs before doing any work."""
import pytest

from workers.errors import InvalidArguments
from workers.task import UuidStr, argument_validator


def target(post_id: UuidStr, user_id: int, ids: list[str], note: str | None = None) -> None:
    return None


validate = argument_validator(target)
GOOD_UUID = "0b5a3c2e-8f61-4c8e-9a43-3f1d9b1c2a77"


def test_good_arguments_pass():
    validate((GOOD_UUID, 3, ["a"]), {})
    validate((), {"post_id": GOOD_UUID, "user_id": 3, "ids": [], "note": "x"})


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {}, "missing a required argument"),
    ((GOOD_UUID, 3, []), {"colour": "red"}, "unexpected keyword"),
    (("not-a-uuid", 3, []), {}, "not a valid UUID"),
    ((42, 3, []), {}, "must be a UUID string"),
    ((GOOD_UUID, "3", []), {}, "must be an integer"),
    ((GOOD_UUID, True, []), {}, "must be an integer"),
    ((GOOD_UUID, 3, "abc"), {}, "must be a list"),
    ((GOOD_UUID, 3, [1]), {}, r"ids\[0\]"),
    ((GOOD_UUID, 3, [], 5), {}, "note"),
    ((GOOD_UUID, 3, ["x"] * 10_001), {}, "limit"),
])
def test_bad_arguments_raise_a_typed_error(args, kwargs, message):
    with pytest.raises(InvalidArguments, match=message) as info:
        validate(args, kwargs)
    assert info.value.code == "invalid_arguments"
