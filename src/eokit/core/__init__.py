"""Ground floor shared by every eokit capability: errors, data model, I/O, training, reports."""
