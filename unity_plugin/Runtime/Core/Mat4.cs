// 4×4 matrices as 16 floats in column-major order: element (row r, column c) at [c * 4 + r], the layout of
// glTF's inverse bind matrices and of UnityEngine.Matrix4x4's fields m00, m10, m20, m30, m01, ...
// Arithmetic runs in double and rounds once to float.
using System;

namespace AnyMoLe.Core
{
    public static class Mat4
    {
        public static float[] Identity()
        {
            return new float[] { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 };
        }

        public static bool IsIdentity(float[] m)
        {
            for (int i = 0; i < 16; i++)
                if (m[i] != (i % 5 == 0 ? 1f : 0f)) return false;
            return true;
        }

        /// <summary>a · b (b applies first).</summary>
        public static float[] Mul(float[] a, int ao, float[] b, int bo)
        {
            var r = new float[16];
            for (int c = 0; c < 4; c++)
                for (int row = 0; row < 4; row++)
                {
                    double s = 0;
                    for (int k = 0; k < 4; k++) s += (double)a[ao + k * 4 + row] * b[bo + c * 4 + k];
                    r[c * 4 + row] = (float)s;
                }
            return r;
        }

        public static float[] Mul(float[] a, float[] b) { return Mul(a, 0, b, 0); }

        /// <summary>The translation t then rotation q (unit x y z w): T · R.</summary>
        public static float[] FromTR(float[] t, int to, float[] q, int qo)
        {
            double x = q[qo], y = q[qo + 1], z = q[qo + 2], w = q[qo + 3];
            var m = new float[16];
            m[0] = (float)(1 - 2 * (y * y + z * z)); m[1] = (float)(2 * (x * y + z * w)); m[2] = (float)(2 * (x * z - y * w));
            m[4] = (float)(2 * (x * y - z * w)); m[5] = (float)(1 - 2 * (x * x + z * z)); m[6] = (float)(2 * (y * z + x * w));
            m[8] = (float)(2 * (x * z + y * w)); m[9] = (float)(2 * (y * z - x * w)); m[10] = (float)(1 - 2 * (x * x + y * y));
            m[12] = t[to]; m[13] = t[to + 1]; m[14] = t[to + 2]; m[15] = 1;
            return m;
        }

        /// <summary>The inverse of a general 4×4 matrix (cofactors); throws for a singular one.</summary>
        public static float[] Inverse(float[] m, int o = 0)
        {
            var a = new double[16];
            for (int i = 0; i < 16; i++) a[i] = m[o + i];
            var inv = new double[16];
            inv[0] = a[5] * a[10] * a[15] - a[5] * a[11] * a[14] - a[9] * a[6] * a[15] + a[9] * a[7] * a[14] + a[13] * a[6] * a[11] - a[13] * a[7] * a[10];
            inv[4] = -a[4] * a[10] * a[15] + a[4] * a[11] * a[14] + a[8] * a[6] * a[15] - a[8] * a[7] * a[14] - a[12] * a[6] * a[11] + a[12] * a[7] * a[10];
            inv[8] = a[4] * a[9] * a[15] - a[4] * a[11] * a[13] - a[8] * a[5] * a[15] + a[8] * a[7] * a[13] + a[12] * a[5] * a[11] - a[12] * a[7] * a[9];
            inv[12] = -a[4] * a[9] * a[14] + a[4] * a[10] * a[13] + a[8] * a[5] * a[14] - a[8] * a[6] * a[13] - a[12] * a[5] * a[10] + a[12] * a[6] * a[9];
            inv[1] = -a[1] * a[10] * a[15] + a[1] * a[11] * a[14] + a[9] * a[2] * a[15] - a[9] * a[3] * a[14] - a[13] * a[2] * a[11] + a[13] * a[3] * a[10];
            inv[5] = a[0] * a[10] * a[15] - a[0] * a[11] * a[14] - a[8] * a[2] * a[15] + a[8] * a[3] * a[14] + a[12] * a[2] * a[11] - a[12] * a[3] * a[10];
            inv[9] = -a[0] * a[9] * a[15] + a[0] * a[11] * a[13] + a[8] * a[1] * a[15] - a[8] * a[3] * a[13] - a[12] * a[1] * a[11] + a[12] * a[3] * a[9];
            inv[13] = a[0] * a[9] * a[14] - a[0] * a[10] * a[13] - a[8] * a[1] * a[14] + a[8] * a[2] * a[13] + a[12] * a[1] * a[10] - a[12] * a[2] * a[9];
            inv[2] = a[1] * a[6] * a[15] - a[1] * a[7] * a[14] - a[5] * a[2] * a[15] + a[5] * a[3] * a[14] + a[13] * a[2] * a[7] - a[13] * a[3] * a[6];
            inv[6] = -a[0] * a[6] * a[15] + a[0] * a[7] * a[14] + a[4] * a[2] * a[15] - a[4] * a[3] * a[14] - a[12] * a[2] * a[7] + a[12] * a[3] * a[6];
            inv[10] = a[0] * a[5] * a[15] - a[0] * a[7] * a[13] - a[4] * a[1] * a[15] + a[4] * a[3] * a[13] + a[12] * a[1] * a[7] - a[12] * a[3] * a[5];
            inv[14] = -a[0] * a[5] * a[14] + a[0] * a[6] * a[13] + a[4] * a[1] * a[14] - a[4] * a[2] * a[13] - a[12] * a[1] * a[6] + a[12] * a[2] * a[5];
            inv[3] = -a[1] * a[6] * a[11] + a[1] * a[7] * a[10] + a[5] * a[2] * a[11] - a[5] * a[3] * a[10] - a[9] * a[2] * a[7] + a[9] * a[3] * a[6];
            inv[7] = a[0] * a[6] * a[11] - a[0] * a[7] * a[10] - a[4] * a[2] * a[11] + a[4] * a[3] * a[10] + a[8] * a[2] * a[7] - a[8] * a[3] * a[6];
            inv[11] = -a[0] * a[5] * a[11] + a[0] * a[7] * a[9] + a[4] * a[1] * a[11] - a[4] * a[3] * a[9] - a[8] * a[1] * a[7] + a[8] * a[3] * a[5];
            inv[15] = a[0] * a[5] * a[10] - a[0] * a[6] * a[9] - a[4] * a[1] * a[10] + a[4] * a[2] * a[9] + a[8] * a[1] * a[6] - a[8] * a[2] * a[5];
            double det = a[0] * inv[0] + a[1] * inv[4] + a[2] * inv[8] + a[3] * inv[12];
            if (Math.Abs(det) < 1e-30) throw new ArgumentException("the matrix is singular", "m");
            var r = new float[16];
            for (int i = 0; i < 16; i++) r[i] = (float)(inv[i] / det);
            return r;
        }

        /// <summary>m applied to the point (x, y, z, 1) read at p[po], written to r[ro].</summary>
        public static void TransformPoint(float[] m, float[] p, int po, float[] r, int ro)
        {
            double x = p[po], y = p[po + 1], z = p[po + 2];
            for (int i = 0; i < 3; i++)
                r[ro + i] = (float)(m[i] * x + m[4 + i] * y + m[8 + i] * z + m[12 + i]);
        }

        /// <summary>The inverse transpose of m's upper 3×3 applied to the direction at n[no], keeping its length:
        /// how a normal moves with the points m moves (a unit normal stays unit; the identity changes no bit).</summary>
        public static void TransformNormal(float[] inverseOfM, float[] n, int no, float[] r, int ro)
        {
            double x = n[no], y = n[no + 1], z = n[no + 2];
            // (M^-1)^T n: row i of the transpose is column i of M^-1.
            double rx = inverseOfM[0] * x + inverseOfM[1] * y + inverseOfM[2] * z;
            double ry = inverseOfM[4] * x + inverseOfM[5] * y + inverseOfM[6] * z;
            double rz = inverseOfM[8] * x + inverseOfM[9] * y + inverseOfM[10] * z;
            double lenIn = Math.Sqrt(x * x + y * y + z * z), lenOut = Math.Sqrt(rx * rx + ry * ry + rz * rz);
            double k = lenOut == 0 ? 1 : lenIn / lenOut;
            r[ro] = (float)(rx * k); r[ro + 1] = (float)(ry * k); r[ro + 2] = (float)(rz * k);
        }
    }
}
