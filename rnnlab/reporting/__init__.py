"""What people read: the results tables, the gradient figure, and the matplotlib figures behind them."""
