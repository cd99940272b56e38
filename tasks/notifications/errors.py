from workers.errors import InvalidArguments


class UnknownKind(InvalidArguments):
    """A notification kind the task does not handle: permanent, never retried."""

    code = "unknown_notification_kind"
