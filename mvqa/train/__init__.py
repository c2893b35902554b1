"""Fine-tuning: Wait-token trace formatting and the Lightning module that trains any model of the model
group."""
