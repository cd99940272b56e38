"""mentions job family: ``extract_mentions`` is the pure parser the web tier may also use."""
from tasks.mentions.parser import extract_mentions

__all__ = ["extract_mentions"]
