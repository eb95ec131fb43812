"""Modal dialogs of the app, each a typed ``ModalScreen[T]`` that returns its answer through ``dismiss()``."""

from .confirm import ConfirmDialog
from .file_picker import FilePickerDialog
from .incoming import IncomingConnectionDialog
from .incoming_files import IncomingFilesDialog
from .verify import VerifyDeviceDialog

__all__ = ["ConfirmDialog", "FilePickerDialog", "IncomingConnectionDialog", "IncomingFilesDialog", "VerifyDeviceDialog"]
