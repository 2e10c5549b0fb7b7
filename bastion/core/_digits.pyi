# The C extension bastion/core/_digits.c, as the type checker sees it.
from typing_extensions import Buffer

def digit_run(data: Buffer, count: int, /) -> bool: ...
