"""Write-back: services send commands (create an order, a customer) that the relay executes in the ERP."""
