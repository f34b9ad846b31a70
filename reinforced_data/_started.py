"""The process the package was first imported in: noted before torch and everything slow."""

import os

#: (pid, parent pid) of the process when the package was first imported in it, before torch and
#: everything slow: the launcher that started the process even when it died during the seconds of
#: imports that follow (see :class:`reinforced_data.distributed.ParentWatch`).
STARTED_UNDER = (os.getpid(), os.getppid())
