"""Starting sandboxed children (parent side): the launcher that caps them, the bubblewrap
view of the machine they get, their control groups and uids, and the handle the parent
talks to them through."""
