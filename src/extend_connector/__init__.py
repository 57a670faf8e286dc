"""extend-connector: joins a webshop to the Extend Commerce ERP."""

__version__ = "0.1.0"
