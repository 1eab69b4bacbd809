"""The five services: ws, signal, risk, execution, db_writer."""
