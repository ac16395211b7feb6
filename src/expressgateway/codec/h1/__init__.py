"""codec/h1"""
