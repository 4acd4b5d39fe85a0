"""What every loupe order service (shop, crm, mes) shares: its connections (kernel.py), the
rules of its `orders` table (orders_table.py), its HTTP app and run loop (http.py), and the 3D
model files it takes in and serves (model_files.py)."""
