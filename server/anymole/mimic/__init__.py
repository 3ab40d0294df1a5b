"""mimic"""
