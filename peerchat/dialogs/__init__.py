"""Modal dialogs of the app, each a typed ``ModalScreen[T]`` that returns its answer through ``dismiss()``."""

from .file_picker import FilePickerDialog
from .incoming import IncomingConnectionDialog
from .incoming_files import IncomingFilesDialog

__all__ = ["FilePickerDialog", "IncomingConnectionDialog", "IncomingFilesDialog"]
